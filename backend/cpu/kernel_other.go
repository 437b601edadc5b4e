//go:build !amd64

package cpu

// simdKernel has no assembly on this architecture.
func simdKernel() (func(k int, a, b, out []float32), string) { return nil, "" }
