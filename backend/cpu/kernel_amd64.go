package cpu

import "golang.org/x/sys/cpu"

// kernel6x16AVX2 is implemented in kernel_amd64.s.
//
//go:noescape
func kernel6x16AVX2(k int, a, b, c *float32, ldc, add int)

// kernel6x16OffsetsAVX2 is implemented in kernel_amd64.s.
//
//go:noescape
func kernel6x16OffsetsAVX2(k int, a, b *float32, offs *int64, c *float32, ldc, add int)

// dot2x6AVX2 is implemented in kernel_amd64.s.
//
//go:noescape
func dot2x6AVX2(n8 int, dy0, dy1, x *float32, offs *int64, acc *float32)

// simdConvKernels returns the stride-1 convolution kernels: the AVX-512
// implicit-GEMM kernel (8-row tiles) where the processor has AVX-512 and
// avx512 allows, else AVX2+FMA; filter gradients on AVX2+FMA either way.
func simdConvKernels(avx512 bool) (implicitKernel, dotKernel, string) {
	if avx512 && cpu.X86.HasAVX512F {
		return implicitKernel{rows: 8, run: func(k int, a, b []float32, offs []int64, c []float32, ldc int, add bool) {
				_ = c[7*ldc+nr-1]
				if k == 0 {
					kernelOffsetsRowsGo(8, 0, a, b, offs, c, ldc, add)
					return
				}
				_ = a[k*8-1]
				_ = b[offs[k-1]+nr-1] // offsets increase: the last row is the farthest
				kernel8x16OffsetsAVX512(k, &a[0], &b[0], &offs[0], &c[0], ldc, flag(add))
			},
				twoRows: twoRowsAVX512()},
			avx2Dot(),
			"AVX-512 assembly (filter gradients: AVX2+FMA)"
	}
	return implicitKernel{rows: mr, run: func(k int, a, b []float32, offs []int64, c []float32, ldc int, add bool) {
			_ = c[(mr-1)*ldc+nr-1]
			if k == 0 {
				kernelOffsetsGo(0, a, b, offs, c, ldc, add)
				return
			}
			_ = a[k*mr-1]
			_ = b[offs[k-1]+nr-1]
			kernel6x16OffsetsAVX2(k, &a[0], &b[0], &offs[0], &c[0], ldc, flag(add))
		}},
		avx2Dot(),
		"AVX2+FMA assembly"
}

// simdDirectKernels returns the channels-last AVX-512 kernel (direct.go),
// or nil without AVX-512 or when avx512 is false.
func simdDirectKernels(avx512 bool) *directKernels {
	if !avx512 || !cpu.X86.HasAVX512F {
		return nil
	}
	return &directKernels{
		transpose: func(dst []float32, ldd int, src []float32, lds int, blocks int) {
			if blocks <= 0 {
				return
			}
			_ = dst[(16*blocks-1)*ldd+15]
			_ = src[15*lds+16*blocks-1]
			transposeBlocksAVX512(&dst[0], ldd, &src[0], lds, blocks)
		},
		filter: func(rows, cols int, dy []float32, dyRow, dyPlane int, x []float32, xRow, xCol int, acc []float32) {
			_ = acc[directRows*directCols-1]
			if rows == 0 || cols == 0 {
				return
			}
			_ = dy[(directRows-1)*dyPlane+(rows-1)*dyRow+cols-1]
			_ = x[(rows-1)*xRow+(cols-1)*xCol+directCols-1]
			filterNCHW8x16AVX512(rows, cols, &dy[0], dyRow, dyPlane, &x[0], xRow, xCol, &acc[0])
		},
	}
}

// twoRowsAVX512 is the AVX-512 implicit kernel for 8-wide outputs, or nil
// without AVX-512 DQ (its 256-bit insert).
func twoRowsAVX512() func(k int, a, b []float32, offs []int64, gap int, c []float32, ldc int, add bool) {
	if !cpu.X86.HasAVX512DQ {
		return nil
	}
	return func(k int, a, b []float32, offs []int64, gap int, c []float32, ldc int, add bool) {
		_ = c[7*ldc+nr-1]
		if k == 0 {
			kernelOffsets2RowsGo(8, 0, a, b, offs, gap, c, ldc, add)
			return
		}
		_ = a[k*8-1]
		_ = b[offs[k-1]+int64(gap)+nr/2-1] // offsets increase: the last row is the farthest
		kernel8x16Offsets2RowsAVX512(k, &a[0], &b[0], &offs[0], gap, &c[0], ldc, flag(add))
	}
}

// avx2Dot is the AVX2+FMA filter-gradient kernel.
func avx2Dot() dotKernel {
	return dotKernel{rows: 2, cols: 6, lanes: 8, run: func(n int, dy []float32, ldy int, x []float32, offs []int64, acc []float32) {
		_ = acc[2*6*8-1]
		if n == 0 {
			return
		}
		_ = dy[ldy+n*8-1]
		_ = x[farthest(offs[:6])+int64(n*8)-1]
		dot2x6AVX2(n, &dy[0], &dy[ldy], &x[0], &offs[0], &acc[0])
	}}
}

func farthest(offs []int64) int64 {
	var far int64
	for _, o := range offs {
		far = max(far, o)
	}
	return far
}

// simdKernel returns the AVX2+FMA micro-kernel when the processor has it.
func simdKernel() (func(k int, a, b, c []float32, ldc int, add bool), string) {
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		return func(k int, a, b, c []float32, ldc int, add bool) {
			_ = c[(mr-1)*ldc+nr-1]
			if k == 0 {
				kernelGo(0, a, b, c, ldc, add)
				return
			}
			_ = a[k*mr-1]
			_ = b[k*nr-1]
			kernel6x16AVX2(k, &a[0], &b[0], &c[0], ldc, flag(add))
		}, "AVX2+FMA assembly"
	}
	return nil, ""
}

func flag(v bool) int {
	if v {
		return 1
	}
	return 0
}
