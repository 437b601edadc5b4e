// bf16 and tf32 rounding on the host, as the GPU does them: bf16 is the
// upper half of a float32, rounded to nearest even (NaN stays NaN); tf32
// keeps float32's exponent and ten mantissa bits, rounded the same way.

#pragma once

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

// tf32_round rounds f to float32 with a 10-bit mantissa, ties to even.
inline float tf32_round(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return f;  // Inf, NaN
    u += 0xfffu + ((u >> 13) & 1u);
    return bits_float(u & ~0x1fffu);
}

}  // namespace emu
