//go:build !amd64

package cpu

// simdKernel has no assembly on this architecture.
func simdKernel() (func(k int, a, b, c []float32, ldc int, add bool), string) { return nil, "" }

// simdOffsetsKernel has no assembly on this architecture.
func simdOffsetsKernel() func(k int, a, b []float32, offs []int64, c []float32, ldc int, add bool) {
	return nil
}

// simdDotKernel has no assembly on this architecture.
func simdDotKernel() func(n8 int, dy0, dy1, x []float32, offs []int64, acc []float32) { return nil }
