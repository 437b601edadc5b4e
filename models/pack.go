package models

// PackSigns packs the signs of w into bits, eight weights a byte, least
// significant bit first: a set bit is +1 (w ≥ 0, as sign(0) = +1), a clear
// bit −1. The last byte's unused bits are zero.
func PackSigns(w []float32) []byte {
	out := make([]byte, (len(w)+7)/8)
	for i, v := range w {
		if !(v < 0) {
			out[i/8] |= 1 << (i % 8)
		}
	}
	return out
}

// UnpackSigns expands n packed signs into ±1 values.
func UnpackSigns(bits []byte, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		if bits[i/8]&(1<<(i%8)) != 0 {
			out[i] = 1
		} else {
			out[i] = -1
		}
	}
	return out
}
