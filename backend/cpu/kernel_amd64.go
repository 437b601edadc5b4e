package cpu

import "golang.org/x/sys/cpu"

// kernel6x16AVX2 is implemented in kernel_amd64.s.
//
//go:noescape
func kernel6x16AVX2(k int, a, b, out *float32)

// kernel6x16OffsetsAVX2 is implemented in kernel_amd64.s.
//
//go:noescape
func kernel6x16OffsetsAVX2(k int, a, b *float32, offs *int64, out *float32)

// simdOffsetsKernel returns the AVX2+FMA implicit-B micro-kernel.
func simdOffsetsKernel() func(k int, a, b []float32, offs []int64, out []float32) {
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		return func(k int, a, b []float32, offs []int64, out []float32) {
			if k == 0 {
				clear(out[:mr*nr])
				return
			}
			_ = a[k*mr-1]
			_ = b[offs[k-1]+nr-1] // offsets increase: the last row is the farthest
			_ = out[mr*nr-1]
			kernel6x16OffsetsAVX2(k, &a[0], &b[0], &offs[0], &out[0])
		}
	}
	return nil
}

// simdKernel returns the AVX2+FMA micro-kernel when the processor has it.
func simdKernel() (func(k int, a, b, out []float32), string) {
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		return func(k int, a, b, out []float32) {
			if k == 0 {
				clear(out[:mr*nr])
				return
			}
			_ = a[k*mr-1]
			_ = b[k*nr-1]
			_ = out[mr*nr-1]
			kernel6x16AVX2(k, &a[0], &b[0], &out[0])
		}, "AVX2+FMA assembly"
	}
	return nil, ""
}
