// Conversions between float32 and the 16-bit formats of mixed precision
// (Options.Precision "bf16" and "fp16"). Tensors stay float32; the
// operands of a GEMM or convolution are rounded into scratch buffers just
// before it runs (round to nearest, ties to even: one cvt.rn per value;
// to fp16, values beyond its range become ±Inf, which loss scaling
// detects), and cuDNN's 16-bit convolution outputs are widened back to
// float32 (exact). One thread per element, grid-stride.

#include "storage.cuh"

// narrow sets dst[i] = src[i] rounded to T (nearest even).
template <class T> __device__ __forceinline__ void narrow(T* dst, const float* src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) store(dst, i, src[i]);
}

// widen sets dst[i] = float(src[i]), exact.
template <class T> __device__ __forceinline__ void widen(float* dst, const T* src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) dst[i] = load(src, i);
}

extern "C" __global__ void f32_to_bf16(__nv_bfloat16* dst, const float* src, int n) { narrow(dst, src, n); }
extern "C" __global__ void bf16_to_f32(float* dst, const __nv_bfloat16* src, int n) { widen(dst, src, n); }
extern "C" __global__ void f32_to_f16(__half* dst, const float* src, int n) { narrow(dst, src, n); }
extern "C" __global__ void f16_to_f32(float* dst, const __half* src, int n) { widen(dst, src, n); }
