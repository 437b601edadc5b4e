package cpu

import "golang.org/x/sys/cpu"

// The Winograd kernels in winograd_amd64.s (AVX-512) and winograd2_amd64.s
// (AVX2+FMA); twins share a signature.
//
//go:noescape
func winogradInputAVX512(n int, x *float32, xRow, xCol int, v *float32, vStep, vPlane int)

//go:noescape
func winogradOutputAVX512(n int, m *float32, mStep, mPlane int, y *float32, yRow, yCol int)

//go:noescape
func winogradGemmAVX512(blocks, k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func winogradGradAVX512(n int, dy *float32, dyRow, dyCol int, m *float32, mStep, mPlane int)

//go:noescape
func winogradFilterGemmAVX512(k, blocks int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func winogradInputAVX2(n int, x *float32, xRow, xCol int, v *float32, vStep, vPlane int)

//go:noescape
func winogradOutputAVX2(n int, m *float32, mStep, mPlane int, y *float32, yRow, yCol int)

//go:noescape
func winogradGemmAVX2(blocks, k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func winogradGradAVX2(n int, dy *float32, dyRow, dyCol int, m *float32, mStep, mPlane int)

//go:noescape
func winogradFilterGemmAVX2(k, blocks int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)

//go:noescape
func transposeBlocksAVX2(dst *float32, ldd int, src *float32, lds int, blocks int)

// winogradAsm is one set of Winograd kernels in assembly.
type winogradAsm struct {
	lanes      int
	name       string
	input      func(n int, x *float32, xRow, xCol int, v *float32, vStep, vPlane int)
	output     func(n int, m *float32, mStep, mPlane int, y *float32, yRow, yCol int)
	gemm       func(blocks, k int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
	grad       func(n int, dy *float32, dyRow, dyCol int, m *float32, mStep, mPlane int)
	filterGemm func(k, blocks int, a *float32, lda int, b *float32, ldb int, c *float32, ldc int)
	transpose  func(dst *float32, ldd int, src *float32, lds int, blocks int)
}

// simdWinogradKernels returns the Winograd kernels: AVX-512 where the
// processor has it and avx512 allows, else AVX2+FMA, else nil.
func simdWinogradKernels(avx512 bool) *winogradKernels {
	switch {
	case avx512 && cpu.X86.HasAVX512F:
		return wrapWinograd(winogradAsm{16, "AVX-512", winogradInputAVX512, winogradOutputAVX512,
			winogradGemmAVX512, winogradGradAVX512, winogradFilterGemmAVX512, transposeBlocksAVX512})
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return wrapWinograd(winogradAsm{8, "AVX2+FMA", winogradInputAVX2, winogradOutputAVX2,
			winogradGemmAVX2, winogradGradAVX2, winogradFilterGemmAVX2, transposeBlocksAVX2})
	}
	return nil
}

// wrapWinograd wraps assembly kernels in functions on slices that check
// every element the assembly will touch.
func wrapWinograd(k winogradAsm) *winogradKernels {
	last := k.lanes - 1
	return &winogradKernels{
		lanes: k.lanes,
		name:  k.name,
		input: func(n int, x []float32, xRow, xCol int, v []float32, vStep, vPlane int) {
			if n <= 0 {
				return
			}
			_ = x[2*(n-1)*xCol+3*xRow+3*xCol+last]
			_ = v[15*vPlane+(n-1)*vStep+last]
			k.input(n, &x[0], xRow, xCol, &v[0], vStep, vPlane)
		},
		output: func(n int, m []float32, mStep, mPlane int, y []float32, yRow, yCol int) {
			if n <= 0 {
				return
			}
			_ = m[15*mPlane+(n-1)*mStep+last]
			_ = y[2*(n-1)*yCol+yRow+yCol+last]
			k.output(n, &m[0], mStep, mPlane, &y[0], yRow, yCol)
		},
		gemm: func(blocks, kk int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
			if blocks <= 0 {
				return
			}
			_ = c[(winogradRows*blocks-1)*ldc+last]
			if kk <= 0 {
				winogradGemmGo(k.lanes, blocks, 0, a, lda, b, ldb, c, ldc)
				return
			}
			_ = a[(winogradRows*blocks-1)*lda+kk-1]
			_ = b[(kk-1)*ldb+last]
			k.gemm(blocks, kk, &a[0], lda, &b[0], ldb, &c[0], ldc)
		},
		grad: func(n int, dy []float32, dyRow, dyCol int, m []float32, mStep, mPlane int) {
			if n <= 0 {
				return
			}
			_ = dy[2*(n-1)*dyCol+dyRow+dyCol+last]
			_ = m[15*mPlane+(n-1)*mStep+last]
			k.grad(n, &dy[0], dyRow, dyCol, &m[0], mStep, mPlane)
		},
		filterGemm: func(kk, blocks int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
			if blocks <= 0 || kk <= 0 {
				return
			}
			_ = c[(winogradRows-1)*ldc+k.lanes*blocks-1]
			_ = a[(kk-1)*lda+winogradRows-1]
			_ = b[(kk-1)*ldb+k.lanes*blocks-1]
			k.filterGemm(kk, blocks, &a[0], lda, &b[0], ldb, &c[0], ldc)
		},
		transpose: func(dst []float32, ldd int, src []float32, lds int, blocks int) {
			if blocks <= 0 {
				return
			}
			_ = dst[(16*blocks-1)*ldd+15]
			_ = src[15*lds+16*blocks-1]
			k.transpose(&dst[0], ldd, &src[0], lds, blocks)
		},
	}
}
