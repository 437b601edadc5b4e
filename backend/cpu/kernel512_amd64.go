package cpu

// kernel8x16OffsetsAVX512 is implemented in kernel512_amd64.s.
//
//go:noescape
func kernel8x16OffsetsAVX512(k int, a, b *float32, offs *int64, c *float32, ldc, add int)
