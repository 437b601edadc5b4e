// Runs in both builds.

package cuda

import (
	"math/rand/v2"
	"testing"
)

// The multiply-shift division equals n / d for every divisor up to 5000
// and a few large ones, over the numerators around multiples of d, the
// extremes, and random ones below 2³¹.
func TestDivider(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const top = 1<<31 - 1
	divisors := []int{1<<31 - 1, 1 << 30, 1<<30 + 1, 65535, 65536, 65537, 224 * 224, 3 * 224 * 224}
	for d := 1; d <= 5000; d++ {
		divisors = append(divisors, d)
	}
	for _, d := range divisors {
		mul, shift := divider(d)
		check := func(n int) {
			if n < 0 || n > top {
				return
			}
			if got, want := divide(uint32(n), mul, shift), uint32(n/d); got != want {
				t.Fatalf("%d / %d: %d, want %d (mul %d, shift %d)", n, d, got, want, mul, shift)
			}
		}
		for _, n := range []int{0, 1, d - 1, d, d + 1, top, top - 1, top / d * d, top/d*d - 1} {
			check(n)
		}
		for k := 0; k < 200; k++ {
			q := rng.IntN(top/d + 1)
			check(q*d - 1)
			check(q * d)
			check(rng.IntN(top + 1))
		}
	}
}
