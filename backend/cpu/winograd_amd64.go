package cpu

import "golang.org/x/sys/cpu"

// winogradInputAVX512 is implemented in winograd_amd64.s.
//
//go:noescape
func winogradInputAVX512(n int, x *float32, xRow, xCol int, v *float32, vStep, vPlane int)

// winogradOutputAVX512 is implemented in winograd_amd64.s.
//
//go:noescape
func winogradOutputAVX512(n int, m *float32, mStep, mPlane int, y *float32, yRow, yCol int)

// winogradGemmAVX512 is implemented in winograd_amd64.s.
//
//go:noescape
func winogradGemmAVX512(blocks, k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

// winogradGradAVX512 is implemented in winograd_amd64.s.
//
//go:noescape
func winogradGradAVX512(n int, dy *float32, dyRow, dyCol int, m *float32, mStep, mPlane int)

// winogradFilterGemmAVX512 is implemented in winograd_amd64.s.
//
//go:noescape
func winogradFilterGemmAVX512(k, blocks int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

// simdWinogradKernels returns the AVX-512 Winograd kernels, or nil
// without AVX-512 or when avx512 is false. The wrappers check every
// element the assembly will touch.
func simdWinogradKernels(avx512 bool) *winogradKernels {
	if !avx512 || !cpu.X86.HasAVX512F {
		return nil
	}
	const last = winogradLanes - 1
	return &winogradKernels{
		input: func(n int, x []float32, xRow, xCol int, v []float32, vStep, vPlane int) {
			if n <= 0 {
				return
			}
			_ = x[2*(n-1)*xCol+3*xRow+3*xCol+last]
			_ = v[15*vPlane+(n-1)*vStep+last]
			winogradInputAVX512(n, &x[0], xRow, xCol, &v[0], vStep, vPlane)
		},
		output: func(n int, m []float32, mStep, mPlane int, y []float32, yRow, yCol int) {
			if n <= 0 {
				return
			}
			_ = m[15*mPlane+(n-1)*mStep+last]
			_ = y[2*(n-1)*yCol+yRow+yCol+last]
			winogradOutputAVX512(n, &m[0], mStep, mPlane, &y[0], yRow, yCol)
		},
		gemm: func(blocks, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
			if blocks <= 0 {
				return
			}
			_ = c[(winogradRows*blocks-1)*ldc+last]
			if k <= 0 {
				winogradGemmGo(blocks, 0, a, lda, b, ldb, c, ldc)
				return
			}
			_ = a[(winogradRows*blocks-1)*lda+k-1]
			_ = b[(k-1)*ldb+last]
			winogradGemmAVX512(blocks, k, &a[0], lda, &b[0], ldb, &c[0], ldc)
		},
		grad: func(n int, dy []float32, dyRow, dyCol int, m []float32, mStep, mPlane int) {
			if n <= 0 {
				return
			}
			_ = dy[2*(n-1)*dyCol+dyRow+dyCol+last]
			_ = m[15*mPlane+(n-1)*mStep+last]
			winogradGradAVX512(n, &dy[0], dyRow, dyCol, &m[0], mStep, mPlane)
		},
		filterGemm: func(k, blocks int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
			if blocks <= 0 || k <= 0 {
				return
			}
			_ = c[(winogradRows-1)*ldc+winogradLanes*blocks-1]
			_ = a[(k-1)*lda+winogradRows-1]
			_ = b[(k-1)*ldb+winogradLanes*blocks-1]
			winogradFilterGemmAVX512(k, blocks, &a[0], lda, &b[0], ldb, &c[0], ldc)
		},
	}
}
