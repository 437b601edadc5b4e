// Division by a divisor fixed for a launch, in index arithmetic (divide.go):
// the host passes mul and shift for the divisor d, and Divisor{mul,
// shift}.div(n) is n / d for every n below 2³¹ — a multiply-high, an add
// and a shift where a 32-bit division takes about twenty instructions.

#pragma once

struct Divisor {
    unsigned mul, shift;
    __device__ __forceinline__ unsigned div(unsigned n) const { return (__umulhi(n, mul) + n) >> shift; }
};
