package cuda

// Division by a launch's fixed divisors in the index arithmetic of
// kernels (kernels/divide.cuh): a multiply-high, an add and a shift in
// place of a 32-bit division, which costs about twenty instructions and
// made max pooling bound by arithmetic rather than by memory.

// divider returns the multiplier and shift with which
// (umulhi(n, mul) + n) >> shift is n / d for every n below 2³¹ (the
// method of Granlund and Montgomery, as PyTorch's IntDivider has it):
// shift is the smallest with 2^shift ≥ d, and mul = ⌊2³²·(2^shift − d)/d⌋ + 1,
// which fits 32 bits. d must be in [1, 2³¹); a smaller one is taken as 1
// (the max-pooling ops, its users, check their shapes first).
func divider(d int) (mul, shift uint32) {
	d = max(d, 1)
	for shift < 32 && 1<<shift < d {
		shift++
	}
	return uint32((uint64(1)<<32*(uint64(1)<<shift-uint64(d)))/uint64(d) + 1), shift
}

// divide is what the kernels compute with divider's mul and shift.
func divide(n, mul, shift uint32) uint32 {
	hi := uint32((uint64(n) * uint64(mul)) >> 32)
	return (hi + n) >> shift
}
