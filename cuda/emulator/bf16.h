// bf16, fp16 and tf32 rounding on the host, as the GPU does them: bf16 is
// the upper half of a float32, rounded to nearest even (NaN stays NaN);
// fp16 (IEEE binary16) has five exponent bits, ten mantissa bits and
// subnormals, rounds to nearest even and overflows to ±Inf; tf32 keeps
// float32's exponent and ten mantissa bits, rounded the same way.

#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace emu {

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// bf16_bits rounds f to the nearest bf16, ties to even.
inline uint16_t bf16_bits(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

inline float bf16_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

// f16_bits rounds f to the nearest fp16, ties to even: ±Inf from 65520
// (halfway past 65504, the largest finite value) on, subnormals below
// 2^-14 in steps of 2^-24.
inline uint16_t f16_bits(float f) {
    uint32_t u = float_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;   // quiet NaN
    if (a >= 0x477ff000u) return sign | 0x7c00u;  // ±Inf
    if (a < 0x38800000u) {                        // subnormal or zero
        // a·2^24 is the value in units of 2^-24 (exact: a power-of-two
        // scaling); nearbyint rounds it to nearest even in the default mode.
        return sign | (uint16_t)std::nearbyint(bits_float(a) * 16777216.0f);
    }
    a += 0xfffu + ((a >> 13) & 1u);                // round the 13 dropped bits
    return sign | (uint16_t)((a - (112u << 23)) >> 13);  // rebias 127 → 15
}

// f16_float widens an fp16 value to float32 (exact).
inline float f16_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-08f;  // m·2^-24
        return sign ? -v : v;
    }
    if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
    return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

// tf32_round rounds f to float32 with a 10-bit mantissa, ties to even.
inline float tf32_round(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return f;  // Inf, NaN
    u += 0xfffu + ((u >> 13) & 1u);
    return bits_float(u & ~0x1fffu);
}

}  // namespace emu
