//go:build !amd64

package cpu

// simdKernel has no assembly on this architecture.
func simdKernel() (func(k int, a, b, out []float32), string) { return nil, "" }

// simdOffsetsKernel has no assembly on this architecture.
func simdOffsetsKernel() func(k int, a, b []float32, offs []int64, out []float32) { return nil }
