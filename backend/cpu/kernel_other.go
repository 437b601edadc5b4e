//go:build !amd64

package cpu

// simdKernel has no assembly on this architecture.
func simdKernel() (func(k int, a, b, c []float32, ldc int, add bool), string) { return nil, "" }

// simdConvKernels is never called: simdKernel returns nil here.
func simdConvKernels(bool) (implicitKernel, dotKernel, string) {
	return implicitKernel{}, dotKernel{}, ""
}

// simdDirectKernels has no assembly on this architecture.
func simdDirectKernels(bool) *directKernels { return nil }

// simdWinogradKernels has no assembly on this architecture.
func simdWinogradKernels(bool) *winogradKernels { return nil }
