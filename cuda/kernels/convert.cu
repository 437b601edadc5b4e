// Conversions between float32 and bfloat16 for bf16 mixed precision
// (Options.Precision = "bf16"). Tensors stay float32; the operands of a
// GEMM or convolution are rounded to bf16 into scratch buffers just before
// it runs (round to nearest, ties to even: __float2bfloat16_rn, one
// cvt.rn.bf16.f32), and cuDNN's bf16 convolution outputs are widened back
// to float32 (exact). One thread per element, grid-stride.

#include <cuda_bf16.h>

// dst[i] = bf16(src[i]), rounded to nearest even.
extern "C" __global__ void f32_to_bf16(__nv_bfloat16* dst, const float* src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        dst[i] = __float2bfloat16_rn(src[i]);
    }
}

// dst[i] = float(src[i]), exact.
extern "C" __global__ void bf16_to_f32(float* dst, const __nv_bfloat16* src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        dst[i] = __bfloat162float(src[i]);
    }
}
