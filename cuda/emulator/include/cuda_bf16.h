// The part of CUDA's cuda_bf16.h that iterbin's kernels use, for the host
// compiler (emu.h): the type and its two conversions, rounding as the GPU
// does (bf16.h). It shadows the toolkit's header through -I.

#pragma once

#include "../bf16.h"

struct __nv_bfloat16 {
    uint16_t bits;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{emu::bf16_bits(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return emu::bf16_float(b.bits); }
