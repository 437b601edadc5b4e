//go:build cuda

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

// The few stable cuBLAS entry points iterbin uses, declared here so no
// cuBLAS header or link-time library is needed; they are looked up with
// dlsym in a library opened at run time.
typedef int (*cublas_create_fn)(void**);
typedef int (*cublas_destroy_fn)(void*);
typedef int (*cublas_set_stream_fn)(void*, void*);
typedef int (*cublas_set_math_mode_fn)(void*, int);
typedef int (*cublas_sgemm_fn)(void*, int, int, int, int, int, const float*, const float*, int,
                               const float*, int, const float*, float*, int);
typedef int (*cublas_sgemm_strided_fn)(void*, int, int, int, int, int, const float*, const float*, int,
                                       long long, const float*, int, long long, const float*, float*, int,
                                       long long, int);
// cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t transa, cublasOperation_t transb,
//     int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype, int lda,
//     const void *B, cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype,
//     int ldc, cublasComputeType_t computeType, cublasGemmAlgo_t algo);
// cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t transa,
//     cublasOperation_t transb, int m, int n, int k, const void *alpha, const void *A,
//     cudaDataType Atype, int lda, long long int strideA, const void *B, cudaDataType Btype, int ldb,
//     long long int strideB, const void *beta, void *C, cudaDataType Ctype, int ldc,
//     long long int strideC, int batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t algo);
// (cublas_api.h of cuBLAS 11.11; cuBLAS 12 and 13 keep these int signatures and add separate
// _64 entry points.) The enums are C ints.
typedef int (*cublas_gemm_ex_fn)(void*, int, int, int, int, int, const void*, const void*, int, int,
                                 const void*, int, int, const void*, void*, int, int, int, int);
typedef int (*cublas_gemm_strided_ex_fn)(void*, int, int, int, int, int, const void*, const void*, int, int,
                                         long long, const void*, int, int, long long, const void*, void*, int,
                                         int, long long, int, int, int);

static void* iterbin_dlopen(const char* name) { return dlopen(name, RTLD_NOW | RTLD_LOCAL); }
static const char* iterbin_dlerror(void) { const char* e = dlerror(); return e ? e : ""; }
static void* iterbin_dlsym(void* lib, const char* name) { return dlsym(lib, name); }

static int iterbin_cublas_create(void* fn, uintptr_t* handle) {
	void* h = 0;
	int st = ((cublas_create_fn)fn)(&h);
	*handle = (uintptr_t)h;
	return st;
}
static int iterbin_cublas_destroy(void* fn, uintptr_t h) { return ((cublas_destroy_fn)fn)((void*)h); }
static int iterbin_cublas_set_stream(void* fn, uintptr_t h, uintptr_t stream) {
	return ((cublas_set_stream_fn)fn)((void*)h, (void*)stream);
}
static int iterbin_cublas_set_math_mode(void* fn, uintptr_t h, int mode) {
	return ((cublas_set_math_mode_fn)fn)((void*)h, mode);
}
static int iterbin_cublas_sgemm(void* fn, uintptr_t h, int ta, int tb, int m, int n, int k, float alpha,
                                uintptr_t a, int lda, uintptr_t b, int ldb, float beta, uintptr_t c, int ldc) {
	return ((cublas_sgemm_fn)fn)((void*)h, ta, tb, m, n, k, &alpha, (const float*)a, lda,
	                             (const float*)b, ldb, &beta, (float*)c, ldc);
}
static int iterbin_cublas_sgemm_strided(void* fn, uintptr_t h, int ta, int tb, int m, int n, int k, float alpha,
                                        uintptr_t a, int lda, long long sa, uintptr_t b, int ldb, long long sb,
                                        float beta, uintptr_t c, int ldc, long long sc, int batch) {
	return ((cublas_sgemm_strided_fn)fn)((void*)h, ta, tb, m, n, k, &alpha, (const float*)a, lda, sa,
	                                     (const float*)b, ldb, sb, &beta, (float*)c, ldc, sc, batch);
}
// alpha and beta are floats: the scale type of CUBLAS_COMPUTE_32F.
static int iterbin_cublas_gemm_ex(void* fn, uintptr_t h, int ta, int tb, int m, int n, int k, float alpha,
                                  uintptr_t a, int atype, int lda, uintptr_t b, int btype, int ldb, float beta,
                                  uintptr_t c, int ctype, int ldc, int compute, int algo) {
	return ((cublas_gemm_ex_fn)fn)((void*)h, ta, tb, m, n, k, &alpha, (const void*)a, atype, lda,
	                               (const void*)b, btype, ldb, &beta, (void*)c, ctype, ldc, compute, algo);
}
static int iterbin_cublas_gemm_strided_ex(void* fn, uintptr_t h, int ta, int tb, int m, int n, int k, float alpha,
                                          uintptr_t a, int atype, int lda, long long sa, uintptr_t b, int btype,
                                          int ldb, long long sb, float beta, uintptr_t c, int ctype, int ldc,
                                          long long sc, int batch, int compute, int algo) {
	return ((cublas_gemm_strided_ex_fn)fn)((void*)h, ta, tb, m, n, k, &alpha, (const void*)a, atype, lda, sa,
	                                       (const void*)b, btype, ldb, sb, &beta, (void*)c, ctype, ldc, sc,
	                                       batch, compute, algo);
}
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// cublasLibraries are tried in order: CUDA 13, 12, 11.
//
// A library opened here (and cuDNN, cudnn.go) is never dlclosed: every New
// dlopens it again, which only takes another reference (dlopen counts
// them) and returns the same handle, and Close leaves it loaded for the
// life of the process. Unloading cuBLAS or cuDNN is a known source of
// crashes: state they keep beyond a handle (thread-local data and its
// destructors, exit handlers, cuDNN's lazily loaded sub-libraries) can be
// reached after their code is unmapped. A process that opens and closes
// backends many times, as the tests do, would also pay the load each time.
// Keeping the reference needs no global state.
var cublasLibraries = [...]string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"}

// cuBLAS constants (cublas_api.h; cudaDataType from library_types.h).
const (
	cublasOpN            = 0
	cublasOpT            = 1
	cublasDefaultMath    = 0 // CUBLAS_DEFAULT_MATH
	cublasTF32TensorMath = 3 // CUBLAS_TF32_TENSOR_OP_MATH

	cudaR32F          = 0  // CUDA_R_32F
	cudaR16F          = 2  // CUDA_R_16F
	cudaR16BF         = 14 // CUDA_R_16BF
	cublasCompute32F  = 68 // CUBLAS_COMPUTE_32F: float accumulation and scale type
	cublasGemmDefault = -1 // CUBLAS_GEMM_DEFAULT: cuBLAS's heuristic picks the kernel
)

// cublas is a cuBLAS handle with the entry points it calls.
type cublas struct {
	// lib is the dlopen handle, never closed (see cublasLibraries).
	lib                                  unsafe.Pointer
	name                                 string
	handle                               C.uintptr_t
	create, destroy, setStream, mathMode unsafe.Pointer
	sgemm, sgemmStrided                  unsafe.Pointer
	// gemmEx and gemmStridedEx run the 16-bit GEMMs (only looked up for
	// precision bf16 and fp16), whose A and B are of cudaDataType half.
	gemmEx, gemmStridedEx unsafe.Pointer
	half                  C.int
}

// openCublas loads the newest cuBLAS found and creates a handle bound to
// stream, in the math mode of precision (a checked Options.Precision).
// fp32, bf16 and fp16 keep CUBLAS_DEFAULT_MATH: SGEMMs stay true fp32,
// and the 16-bit GemmEx calls use tensor cores in it (their compute type,
// CUBLAS_COMPUTE_32F, only asks for fp32 accumulation, which bf16 and
// fp16 tensor cores give).
func openCublas(stream uintptr, precision string) (*cublas, error) {
	var tried []string
	b := &cublas{}
	for _, name := range cublasLibraries {
		cname := C.CString(name)
		lib := C.iterbin_dlopen(cname)
		C.free(unsafe.Pointer(cname))
		if lib != nil {
			b.lib, b.name = lib, name
			break
		}
		tried = append(tried, C.GoString(C.iterbin_dlerror()))
	}
	if b.lib == nil {
		return nil, fmt.Errorf("cuBLAS not found (tried %s): install the CUDA libraries or put their folder on LD_LIBRARY_PATH", strings.Join(tried, "; "))
	}
	type symbolRef struct {
		dst  *unsafe.Pointer
		name string
	}
	symbols := []symbolRef{
		{&b.create, "cublasCreate_v2"}, {&b.destroy, "cublasDestroy_v2"}, {&b.setStream, "cublasSetStream_v2"},
		{&b.mathMode, "cublasSetMathMode"}, {&b.sgemm, "cublasSgemm_v2"}, {&b.sgemmStrided, "cublasSgemmStridedBatched"},
	}
	if precision == BF16 || precision == FP16 {
		b.half = cudaR16BF
		if precision == FP16 {
			b.half = cudaR16F
		}
		symbols = append(symbols, symbolRef{&b.gemmEx, "cublasGemmEx"}, symbolRef{&b.gemmStridedEx, "cublasGemmStridedBatchedEx"})
	}
	for _, s := range symbols {
		cname := C.CString(s.name)
		*s.dst = C.iterbin_dlsym(b.lib, cname)
		C.free(unsafe.Pointer(cname))
		if *s.dst == nil {
			return nil, fmt.Errorf("%s has no %s", b.name, s.name)
		}
	}
	if st := C.iterbin_cublas_create(b.create, &b.handle); st != 0 {
		return nil, fmt.Errorf("cublasCreate: status %d", int(st))
	}
	if st := C.iterbin_cublas_set_stream(b.setStream, b.handle, C.uintptr_t(stream)); st != 0 {
		b.close()
		return nil, fmt.Errorf("cublasSetStream: status %d", int(st))
	}
	mode := cublasDefaultMath
	if precision == TF32 {
		mode = cublasTF32TensorMath
	}
	if st := C.iterbin_cublas_set_math_mode(b.mathMode, b.handle, C.int(mode)); st != 0 {
		b.close()
		return nil, fmt.Errorf("cublasSetMathMode(%d): status %d", mode, int(st))
	}
	return b, nil
}

// close destroys the handle; the backend's context must be current
// (release makes it so). The library stays loaded (see cublasLibraries).
func (b *cublas) close() {
	if b.handle != 0 {
		C.iterbin_cublas_destroy(b.destroy, b.handle)
		b.handle = 0
	}
}

// gemm computes row-major C = alpha·op(A)·op(B) + beta·C (op(A) m×k,
// op(B) k×n) with column-major cuBLAS, as Cᵀ = op(B)ᵀ·op(A)ᵀ.
func (b *cublas) gemm(transA, transB bool, m, n, k int, alpha float32, a, bb uintptr, beta float32, c uintptr) error {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	st := C.iterbin_cublas_sgemm(b.sgemm, b.handle, op(transB), op(transA), C.int(n), C.int(m), C.int(k), C.float(alpha),
		C.uintptr_t(bb), C.int(ldb), C.uintptr_t(a), C.int(lda), C.float(beta), C.uintptr_t(c), C.int(n))
	if st != 0 {
		return fmt.Errorf("cublasSgemm(%d×%d×%d, transA %v, transB %v): status %d", m, n, k, transA, transB, int(st))
	}
	return nil
}

// gemmStrided is gemm over batch matrices at the given element strides
// (a stride of 0 reuses one matrix for every batch entry).
func (b *cublas) gemmStrided(transA, transB bool, m, n, k int, alpha float32, a uintptr, strideA int, bb uintptr, strideB int, beta float32, c uintptr, strideC, batch int) error {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	st := C.iterbin_cublas_sgemm_strided(b.sgemmStrided, b.handle, op(transB), op(transA), C.int(n), C.int(m), C.int(k), C.float(alpha),
		C.uintptr_t(bb), C.int(ldb), C.longlong(strideB), C.uintptr_t(a), C.int(lda), C.longlong(strideA),
		C.float(beta), C.uintptr_t(c), C.int(n), C.longlong(strideC), C.int(batch))
	if st != 0 {
		return fmt.Errorf("cublasSgemmStridedBatched(%d×%d×%d ×%d): status %d", m, n, k, batch, int(st))
	}
	return nil
}

// gemmHalf is gemm with A and B in the precision's 16-bit format (CUDA_R_16BF
// or CUDA_R_16F) and C in float32, accumulating in float32
// (CUBLAS_COMPUTE_32F): the 16-bit tensor-core GEMM. Leading dimensions
// are gemm's.
func (b *cublas) gemmHalf(transA, transB bool, m, n, k int, alpha float32, a, bb uintptr, beta float32, c uintptr) error {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	st := C.iterbin_cublas_gemm_ex(b.gemmEx, b.handle, op(transB), op(transA), C.int(n), C.int(m), C.int(k), C.float(alpha),
		C.uintptr_t(bb), b.half, C.int(ldb), C.uintptr_t(a), b.half, C.int(lda), C.float(beta),
		C.uintptr_t(c), cudaR32F, C.int(n), cublasCompute32F, cublasGemmDefault)
	if st != 0 {
		return fmt.Errorf("cublasGemmEx(%s %d×%d×%d, transA %v, transB %v): status %d", b.halfName(), m, n, k, transA, transB, int(st))
	}
	return nil
}

// gemmStridedHalf is gemmStrided with A and B in the 16-bit format and C
// in float32 (strides in elements of each).
func (b *cublas) gemmStridedHalf(transA, transB bool, m, n, k int, alpha float32, a uintptr, strideA int, bb uintptr, strideB int, beta float32, c uintptr, strideC, batch int) error {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	st := C.iterbin_cublas_gemm_strided_ex(b.gemmStridedEx, b.handle, op(transB), op(transA), C.int(n), C.int(m), C.int(k), C.float(alpha),
		C.uintptr_t(bb), b.half, C.int(ldb), C.longlong(strideB), C.uintptr_t(a), b.half, C.int(lda), C.longlong(strideA),
		C.float(beta), C.uintptr_t(c), cudaR32F, C.int(n), C.longlong(strideC), C.int(batch), cublasCompute32F, cublasGemmDefault)
	if st != 0 {
		return fmt.Errorf("cublasGemmStridedBatchedEx(%s %d×%d×%d ×%d): status %d", b.halfName(), m, n, k, batch, int(st))
	}
	return nil
}

// halfName names the 16-bit format in errors.
func (b *cublas) halfName() string {
	if b.half == cudaR16F {
		return "fp16"
	}
	return "bf16"
}

func op(trans bool) C.int {
	if trans {
		return cublasOpT
	}
	return cublasOpN
}
