package cpu

// kernel8x16OffsetsAVX512 is implemented in kernel512_amd64.s.
//
//go:noescape
func kernel8x16OffsetsAVX512(k int, a, b *float32, offs *int64, c *float32, ldc, add int)

// kernel8x16Offsets2RowsAVX512 is implemented in kernel512_amd64.s.
//
//go:noescape
func kernel8x16Offsets2RowsAVX512(k int, a, b *float32, offs *int64, gap int, c *float32, ldc, add int)

// transposeBlocksAVX512 is implemented in kernel512_amd64.s.
//
//go:noescape
func transposeBlocksAVX512(dst *float32, ldd int, src *float32, lds int, blocks int)

// filterNCHW8x16AVX512 is implemented in kernel512_amd64.s.
//
//go:noescape
func filterNCHW8x16AVX512(rows, cols int, dy *float32, dyRow, dyPlane int, x *float32, xRow, xCol int, acc *float32)
