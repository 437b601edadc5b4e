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

// simdDotKernel returns the AVX2+FMA filter-gradient kernel.
func simdDotKernel() func(n8 int, dy0, dy1, x []float32, offs []int64, acc []float32) {
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		return func(n8 int, dy0, dy1, x []float32, offs []int64, acc []float32) {
			_ = acc[dotRows*dotCols*8-1]
			if n8 == 0 {
				return
			}
			_ = dy0[n8*8-1]
			_ = dy1[n8*8-1]
			var far int64
			for _, o := range offs[:dotCols] {
				far = max(far, o)
			}
			_ = x[far+int64(n8*8)-1]
			dot2x6AVX2(n8, &dy0[0], &dy1[0], &x[0], &offs[0], &acc[0])
		}
	}
	return nil
}

// simdOffsetsKernel returns the AVX2+FMA implicit-B micro-kernel.
func simdOffsetsKernel() func(k int, a, b []float32, offs []int64, c []float32, ldc int, add bool) {
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		return func(k int, a, b []float32, offs []int64, c []float32, ldc int, add bool) {
			_ = c[(mr-1)*ldc+nr-1]
			if k == 0 {
				kernelOffsetsGo(0, a, b, offs, c, ldc, add)
				return
			}
			_ = a[k*mr-1]
			_ = b[offs[k-1]+nr-1] // offsets increase: the last row is the farthest
			kernel6x16OffsetsAVX2(k, &a[0], &b[0], &offs[0], &c[0], ldc, flag(add))
		}
	}
	return nil
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
