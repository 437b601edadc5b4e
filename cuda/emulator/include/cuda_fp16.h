// The part of CUDA's cuda_fp16.h that iterbin's kernels use, for the host
// compiler (emu.h): the type and its two conversions, rounding as the GPU
// does (bf16.h). It shadows the toolkit's header through -I.

#pragma once

#include "../bf16.h"

struct __half {
    uint16_t bits;
};

inline __half __float2half_rn(float f) { return __half{emu::f16_bits(f)}; }
inline float __half2float(__half h) { return emu::f16_float(h.bits); }
