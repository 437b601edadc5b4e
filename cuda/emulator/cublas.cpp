// A CPU test double of cuBLAS, built as libcublas.so.13, so that the CUDA
// backend's tests (go test -tags cuda ./cuda/) can run without a GPU. It
// exports the entry points cuda/cublas.go looks up with dlsym, with the
// signatures, enum values and status codes of cublas_api.h and
// library_types.h. Device pointers are host pointers; every call
// finishes before it returns, after the work the emulated driver queued
// on the handle's stream (stream.h).
//
// GEMMs are column-major, C = alpha·op(A)·op(B) + beta·C, each dot product
// summed in double and rounded once to C's type. beta = 0 leaves C unread
// (it may hold NaN), as in cuBLAS. Reduced input precision is emulated by
// rounding each element of A and B before it is multiplied: TF32 under
// CUBLAS_TF32_TENSOR_OP_MATH or CUBLAS_COMPUTE_32F_FAST_TF32, bf16 under
// CUBLAS_COMPUTE_32F_FAST_16BF, fp16 under CUBLAS_COMPUTE_32F_FAST_16F or
// the deprecated CUBLAS_TENSOR_OP_MATH. Bad arguments return the status
// cuBLAS documents and print one line to stderr naming the call.

#include "bf16.h"
#include "diagnostic.h"
#include "stream.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <mutex>
#include <new>
#include <thread>
#include <unordered_set>
#include <vector>

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace {

// cublasStatus_t
constexpr int kSuccess = 0, kNotInitialized = 1, kAllocFailed = 3, kInvalidValue = 7, kNotSupported = 15;
// cublasOperation_t
constexpr int kOpN = 0, kOpT = 1, kOpC = 2;
// cudaDataType (library_types.h)
constexpr int kR32F = 0, kR16F = 2, kR16BF = 14;
// cublasComputeType_t
constexpr int k32F = 68, k32FPedantic = 69, k32FFast16F = 74, k32FFast16BF = 75, k32FFastTF32 = 77;
// cublasMath_t; CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION is a flag
constexpr int kTensorOpMath = 1, kTF32TensorOpMath = 3, kDisallowReducedPrecisionReduction = 16;
// cublasGemmAlgo_t: CUBLAS_GEMM_DEFAULT, ALGO0..23, DEFAULT_TENSOR_OP, ALGO0..15_TENSOR_OP
constexpr int kGemmDefault = -1;

int fail(int status, const char* fn, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emu::report_status("cuBLAS", status, fn, fmt, ap);
    va_end(ap);
    return status;
}

struct Handle {
    void* stream = nullptr;
    int math = 0;  // cublasMath_t, CUBLAS_DEFAULT_MATH until set
};

std::mutex live_mu;
std::unordered_set<const void*> live;  // handles created and not destroyed

Handle* lookup(void* h) {
    std::lock_guard<std::mutex> lock(live_mu);
    return live.count(h) ? static_cast<Handle*>(h) : nullptr;
}

// How an input element is rounded before it is multiplied.
enum Rounding { kExact, kTF32, kBF16, kF16 };

// f16_round rounds f to the nearest fp16 value (ties to even; overflow to
// infinity, subnormals kept), returned as a float.
float f16_round(float f) {
    if (!std::isfinite(f)) return f;
    double a = std::fabs((double)f);
    if (a >= 65520.0) return std::copysign(INFINITY, f);
    int e;
    std::frexp(a, &e);             // a = m·2^e, m in [0.5, 1)
    int q = std::max(e - 11, -24);  // 11 significant bits; 2^-24 below the normal range
    return std::copysign((float)std::ldexp(std::nearbyint(std::ldexp(a, -q)), q), f);
}

float round_input(float f, Rounding r) {
    switch (r) {
    case kTF32: return emu::tf32_round(f);
    case kBF16: return emu::bf16_float(emu::bf16_bits(f));
    case kF16: return f16_round(f);
    default: return f;
    }
}

// bf16_from_double rounds d to bf16 once: to float rounding to odd, which
// keeps the information bf16's round-to-nearest-even needs, then to bf16.
uint16_t bf16_from_double(double d) {
    float f = (float)d;
    if (std::isfinite(f) && (double)f != d) {
        uint32_t u = emu::float_bits(f);
        if (std::fabs((double)f) > std::fabs(d)) u -= 1;  // truncate toward zero
        f = emu::bits_float(u | 1u);
    }
    return emu::bf16_bits(f);
}

size_t elem_size(int type) { return type == kR16BF || type == kR16F ? 2 : 4; }

float read(const void* p, int type, size_t i) {
    if (type == kR16BF) return emu::bf16_float(static_cast<const uint16_t*>(p)[i]);
    if (type == kR16F) return emu::f16_float(static_cast<const uint16_t*>(p)[i]);
    return static_cast<const float*>(p)[i];
}

// parallel_for runs f(lo, hi) over [0, n) on the host's cores when work
// (multiply-adds) makes threads worth starting.
template <class F>
void parallel_for(size_t n, double work, F f) {
    size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), n);
    if (work < (1 << 21) || threads <= 1) {
        f(size_t(0), n);
        return;
    }
    std::vector<std::thread> pool;
    size_t chunk = (n + threads - 1) / threads;
    for (size_t lo = 0; lo < n; lo += chunk) {
        size_t hi = std::min(n, lo + chunk);
        try {
            pool.emplace_back(f, lo, hi);
        } catch (...) {
            f(lo, hi);
        }
    }
    for (auto& t : pool) t.join();
}

double dot(const float* a, const float* b, size_t k) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t p = 0;
    for (; p + 4 <= k; p += 4) {
        s0 += (double)a[p] * b[p];
        s1 += (double)a[p + 1] * b[p + 1];
        s2 += (double)a[p + 2] * b[p + 2];
        s3 += (double)a[p + 3] * b[p + 3];
    }
    for (; p < k; p++) s0 += (double)a[p] * b[p];
    return (s0 + s1) + (s2 + s3);
}

// load copies rows×k elements of a column-major matrix at base into out,
// row r's k elements contiguous, rounded as r says: element (row, p) is at
// p + row·ld where along_k, else at row + p·ld.
void load(const void* base, int type, int ld, bool along_k, size_t rows, size_t k, Rounding r, float* out) {
    for (size_t p = 0; p < k; p++)
        for (size_t row = 0; row < rows; row++) {
            size_t i = along_k ? p + row * (size_t)ld : row + p * (size_t)ld;
            out[row * k + p] = round_input(read(base, type, i), r);
        }
}

const char* op_name(int op) { return op == kOpN ? "N" : op == kOpT ? "T" : "C"; }

// gemm is every GEMM entry point: batch GEMMs at the given element
// strides, with A and B of type at, C of type ct, and compute type compute
// (CUBLAS_COMPUTE_32F for the Sgemm calls, whose math mode then applies).
int gemm(const char* fn, void* hv, int ta, int tb, int m, int n, int k, const float* alpha, const void* A,
         int at, int lda, long long sa, const void* B, int bt, int ldb, long long sb, const float* beta, void* C,
         int ct, int ldc, long long sc, int batch, int compute, int algo) {
    Handle* h = lookup(hv);
    if (!h) return fail(kNotInitialized, fn, "handle %p is not one cublasCreate_v2 made (or it was destroyed)", hv);
    for (int op : {ta, tb})
        if (op != kOpN && op != kOpT && op != kOpC) return fail(kInvalidValue, fn, "invalid cublasOperation_t %d", op);
    if (m < 0 || n < 0 || k < 0) return fail(kInvalidValue, fn, "negative size m=%d n=%d k=%d", m, n, k);
    if (batch < 0) return fail(kInvalidValue, fn, "negative batchCount %d", batch);
    int arows = ta == kOpN ? m : k, brows = tb == kOpN ? k : n;
    if (lda < std::max(1, arows))
        return fail(kInvalidValue, fn, "lda=%d < max(1, %d) (transa %s, m=%d k=%d)", lda, arows, op_name(ta), m, k);
    if (ldb < std::max(1, brows))
        return fail(kInvalidValue, fn, "ldb=%d < max(1, %d) (transb %s, k=%d n=%d)", ldb, brows, op_name(tb), k, n);
    if (ldc < std::max(1, m)) return fail(kInvalidValue, fn, "ldc=%d < max(1, m=%d)", ldc, m);
    if (!alpha || !beta) return fail(kInvalidValue, fn, "alpha or beta is NULL");
    if (at != bt) return fail(kNotSupported, fn, "Atype %d differs from Btype %d", at, bt);
    // CUBLAS_COMPUTE_32F follows the math mode for float inputs; bf16
    // and fp16 inputs are exact, and so are products of them.
    int mode = h->math & ~kDisallowReducedPrecisionReduction;
    Rounding r = kExact;
    if (compute == k32F && at == kR32F) r = mode == kTF32TensorOpMath ? kTF32 : mode == kTensorOpMath ? kF16 : kExact;
    bool all32 = at == kR32F && ct == kR32F;
    switch (compute) {
    case k32F:
    case k32FPedantic:
        if (!all32 && !(at == kR16BF && (ct == kR32F || ct == kR16BF)) && !(at == kR16F && ct == kR32F))
            return fail(kNotSupported, fn, "types A/B %d, C %d not supported with compute type %d (emulated: "
                        "32F/32F/32F, 16BF/16BF/32F, 16BF/16BF/16BF, 16F/16F/32F)", at, ct, compute);
        break;
    case k32FFast16F:
    case k32FFast16BF:
    case k32FFastTF32:
        if (!all32)
            return fail(kNotSupported, fn, "compute type %d takes CUDA_R_32F A, B and C, got %d, %d, %d", compute, at,
                        bt, ct);
        r = compute == k32FFast16F ? kF16 : compute == k32FFast16BF ? kBF16 : kTF32;
        break;
    default:
        return fail(kNotSupported, fn, "compute type %d is not emulated (32F, 32F_PEDANTIC, 32F_FAST_16F, "
                    "32F_FAST_16BF, 32F_FAST_TF32 are)", compute);
    }
    if (!(algo == kGemmDefault || (algo >= 0 && algo <= 23) || (algo >= 99 && algo <= 115)))
        return fail(kNotSupported, fn, "invalid cublasGemmAlgo_t %d", algo);
    if (m == 0 || n == 0 || batch == 0) return kSuccess;
    emu::drain_stream(h->stream);
    double al = *alpha, be = *beta;
    bool use_ab = k > 0 && al != 0;  // otherwise C = beta·C, A and B unread
    if ((use_ab && (!A || !B)) || !C) return fail(kInvalidValue, fn, "NULL matrix pointer (A %p, B %p, C %p)", A, B, C);
    try {
        std::vector<float> a(use_ab ? (size_t)m * k : 0), b(use_ab ? (size_t)n * k : 0);
        for (int bi = 0; bi < batch; bi++) {
            if (use_ab && (bi == 0 || sa != 0))
                load(static_cast<const char*>(A) + bi * sa * (long long)elem_size(at), at, lda, ta != kOpN, m, k, r,
                     a.data());
            if (use_ab && (bi == 0 || sb != 0))
                load(static_cast<const char*>(B) + bi * sb * (long long)elem_size(bt), bt, ldb, tb == kOpN, n, k, r,
                     b.data());
            void* c = static_cast<char*>(C) + bi * sc * (long long)elem_size(ct);
            parallel_for(n, (double)m * n * k, [&](size_t j0, size_t j1) {
                for (size_t i0 = 0; i0 < (size_t)m; i0 += 64) {
                    size_t i1 = std::min((size_t)m, i0 + 64);
                    for (size_t j = j0; j < j1; j++)
                        for (size_t i = i0; i < i1; i++) {
                            size_t at_c = i + j * (size_t)ldc;
                            double v = use_ab ? al * dot(&a[i * k], &b[j * k], k) : 0.0;
                            if (be != 0) v += be * read(c, ct, at_c);
                            if (ct == kR16BF)
                                static_cast<uint16_t*>(c)[at_c] = bf16_from_double(v);
                            else
                                static_cast<float*>(c)[at_c] = (float)v;
                        }
                }
            });
        }
    } catch (const std::bad_alloc&) {
        return fail(kAllocFailed, fn, "out of host memory for %d×%d×%d", m, n, k);
    }
    return kSuccess;
}

}  // namespace

EXPORT int cublasCreate_v2(void** handle) {
    if (!handle) return fail(kInvalidValue, "cublasCreate_v2", "handle is NULL");
    Handle* h = new (std::nothrow) Handle();
    if (!h) return fail(kAllocFailed, "cublasCreate_v2", "out of host memory");
    std::lock_guard<std::mutex> lock(live_mu);
    live.insert(h);
    *handle = h;
    return kSuccess;
}

EXPORT int cublasDestroy_v2(void* handle) {
    {
        std::lock_guard<std::mutex> lock(live_mu);
        if (!live.erase(handle))
            return fail(kNotInitialized, "cublasDestroy_v2", "handle %p is not live (never created, or destroyed twice)",
                        handle);
    }
    delete static_cast<Handle*>(handle);
    return kSuccess;
}

EXPORT int cublasSetStream_v2(void* handle, void* stream) {
    Handle* h = lookup(handle);
    if (!h) return fail(kNotInitialized, "cublasSetStream_v2", "handle %p is not live", handle);
    h->stream = stream;
    return kSuccess;
}

EXPORT int cublasSetMathMode(void* handle, int mode) {
    Handle* h = lookup(handle);
    if (!h) return fail(kNotInitialized, "cublasSetMathMode", "handle %p is not live", handle);
    // CUBLAS_DEFAULT_MATH 0, TENSOR_OP 1, PEDANTIC 2, TF32_TENSOR_OP 3,
    // FP32_EMULATED_BF16X9 4, FP64_EMULATED_FIXEDPOINT 8, each optionally
    // with the DISALLOW_REDUCED_PRECISION_REDUCTION flag.
    int base = mode & ~kDisallowReducedPrecisionReduction;
    if (base < 0 || (base > 4 && base != 8)) return fail(kInvalidValue, "cublasSetMathMode", "invalid cublasMath_t %d", mode);
    h->math = mode;
    return kSuccess;
}

EXPORT int cublasSgemm_v2(void* handle, int transa, int transb, int m, int n, int k, const float* alpha,
                          const float* A, int lda, const float* B, int ldb, const float* beta, float* C, int ldc) {
    return gemm("cublasSgemm_v2", handle, transa, transb, m, n, k, alpha, A, kR32F, lda, 0, B, kR32F, ldb, 0, beta, C,
                kR32F, ldc, 0, 1, k32F, kGemmDefault);
}

EXPORT int cublasSgemmStridedBatched(void* handle, int transa, int transb, int m, int n, int k, const float* alpha,
                                     const float* A, int lda, long long strideA, const float* B, int ldb,
                                     long long strideB, const float* beta, float* C, int ldc, long long strideC,
                                     int batchCount) {
    return gemm("cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha, A, kR32F, lda, strideA, B, kR32F,
                ldb, strideB, beta, C, kR32F, ldc, strideC, batchCount, k32F, kGemmDefault);
}

// alpha and beta are floats: the scale type of every compute type emulated.
EXPORT int cublasGemmEx(void* handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A,
                        int Atype, int lda, const void* B, int Btype, int ldb, const void* beta, void* C, int Ctype,
                        int ldc, int computeType, int algo) {
    return gemm("cublasGemmEx", handle, transa, transb, m, n, k, static_cast<const float*>(alpha), A, Atype, lda, 0, B,
                Btype, ldb, 0, static_cast<const float*>(beta), C, Ctype, ldc, 0, 1, computeType, algo);
}

EXPORT int cublasGemmStridedBatchedEx(void* handle, int transa, int transb, int m, int n, int k, const void* alpha,
                                      const void* A, int Atype, int lda, long long strideA, const void* B, int Btype,
                                      int ldb, long long strideB, const void* beta, void* C, int Ctype, int ldc,
                                      long long strideC, int batchCount, int computeType, int algo) {
    return gemm("cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, static_cast<const float*>(alpha), A,
                Atype, lda, strideA, B, Btype, ldb, strideB, static_cast<const float*>(beta), C, Ctype, ldc, strideC,
                batchCount, computeType, algo);
}
