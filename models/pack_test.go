package models

import (
	"math"
	"testing"
)

func TestPackSignsRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 64, 1001} {
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(math.Sin(float64(i*7 + 3)))
		}
		if n > 2 {
			w[0], w[1] = 0, float32(math.Copysign(0, -1)) // sign(±0) = +1
		}
		bits := PackSigns(w)
		if len(bits) != (n+7)/8 {
			t.Fatalf("n=%d: %d bytes, want %d", n, len(bits), (n+7)/8)
		}
		back := UnpackSigns(bits, n)
		for i, v := range w {
			want := float32(1)
			if v < 0 {
				want = -1
			}
			if back[i] != want {
				t.Fatalf("n=%d: weight %d = %v unpacked as %v, want %v", n, i, v, back[i], want)
			}
		}
		if n%8 != 0 && bits[len(bits)-1]>>(n%8) != 0 {
			t.Fatalf("n=%d: unused bits of the last byte are set", n)
		}
	}
}
