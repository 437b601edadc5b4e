// Runs in both builds: the bookkeeping of channels-last layouts
// (layout.go), checked on host slices that stand for device buffers.

package cuda

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// applyTranspose reorders buf in place as the device does for t.
func applyTranspose(buf []float32, t transpose) {
	cnt := t.n * t.c * t.s
	tmp := make([]float32, cnt)
	for i := 0; i < t.n; i++ {
		for ch := 0; ch < t.c; ch++ {
			for j := 0; j < t.s; j++ {
				flat, nhwc := (i*t.c+ch)*t.s+j, (i*t.s+j)*t.c+ch
				if t.toNHWC {
					tmp[nhwc] = buf[flat]
				} else {
					tmp[flat] = buf[nhwc]
				}
			}
		}
	}
	copy(buf, tmp)
}

// stored is how a buffer holding the flat values in layout l looks:
// l's elements reordered, the rest as they are.
func stored(values []float32, l layout) []float32 {
	buf := slices.Clone(values)
	if l.nhwc {
		applyTranspose(buf, transpose{toNHWC: true, n: l.n, c: l.c, s: l.s})
	}
	return buf
}

// counting is n values from, from+1, …
func counting(n int, from float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = from + float32(i)
	}
	return v
}

// randomLayout is a layout over at most size elements: flat, a
// degenerate shape (flat too), or NHWC of 2 to 5 channels and 2 to 6
// positions.
func randomLayout(rng *rand.Rand, size int) layout {
	switch rng.IntN(4) {
	case 0:
		return layout{}
	case 1:
		return nhwcLayout(1+rng.IntN(4), 1, 1+rng.IntN(9))
	}
	c, s := []int{2, 3, 4, 5}[rng.IntN(4)], []int{2, 3, 4, 6}[rng.IntN(4)]
	return nhwcLayout(1+rng.IntN(size/(c*s)), c, s)
}

// Whatever a buffer's layout, the transposes to another one leave it
// holding the same values in the new order, over every element the new
// layout covers (all of them for flat).
func TestTransposesReachTheWantedLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const size = 240
	values := counting(size, 0)
	random := func() layout { return randomLayout(rng, size) }
	for trial := 0; trial < 2000; trial++ {
		have, want := random(), random()
		buf := stored(values, have)
		steps, k := transposes(have, want)
		for _, st := range steps[:k] {
			applyTranspose(buf, st)
		}
		n := size
		if want.nhwc {
			n = want.count()
		}
		if got, exp := buf[:n], stored(values, want)[:n]; !slices.Equal(got, exp) {
			t.Fatalf("%+v → %+v via %+v: the buffer holds %v, want %v", have, want, steps[:k], got, exp)
		}
	}
}

func TestTransposesOnlyWhereNeeded(t *testing.T) {
	big, small := nhwcLayout(8, 4, 9), nhwcLayout(5, 4, 9)
	for _, c := range []struct {
		have, want layout
		steps      int
	}{
		{layout{}, layout{}, 0},
		{big, big, 0},
		{big, small, 0},               // a smaller batch is a prefix
		{small, big, 2},               // a larger one is not
		{big, nhwcLayout(8, 9, 4), 2}, // the same count, other channels
		{big, layout{}, 1},
		{layout{}, big, 1},
		{nhwcLayout(8, 1, 36), layout{}, 0}, // one channel: flat already
		{big, nhwcLayout(8, 36, 1), 1},      // one position: flat
	} {
		if steps, k := transposes(c.have, c.want); k != c.steps {
			t.Errorf("%+v → %+v: %+v, want %d transposes", c.have, c.want, steps[:k], c.steps)
		}
	}
}

func TestElementwiseLayout(t *testing.T) {
	a, b := nhwcLayout(2, 4, 9), nhwcLayout(3, 4, 9)
	for _, c := range []struct {
		n      int
		inputs []layout
		want   layout
	}{
		{72, nil, layout{}},
		{72, []layout{{}, a}, a},         // the NHWC input sets the order
		{72, []layout{a, b}, a},          // the first that covers exactly n
		{72, []layout{b, {}}, layout{}},  // b covers more than the op's elements
		{108, []layout{a, b}, b},         // …or exactly them
		{50, []layout{a, a}, layout{}},   // part of a tensor: flat
		{72, []layout{{}, {}}, layout{}}, // all flat
	} {
		if got := elementwiseLayout(c.n, c.inputs...); got != c.want {
			t.Errorf("elementwiseLayout(%d, %+v) = %+v, want %+v", c.n, c.inputs, got, c.want)
		}
	}
}

func TestChannelsLastFor(t *testing.T) {
	nhwc := nhwcLayout(4, 8, 16)
	for _, c := range []struct {
		prefer bool
		inputs []activation
		want   bool
	}{
		{false, []activation{{have: nhwc, n: 4, c: 8, s: 16}}, true},
		{false, []activation{{have: nhwc, n: 2, c: 8, s: 16}}, true},  // a smaller batch
		{false, []activation{{have: nhwc, n: 4, c: 16, s: 8}}, false}, // another shape
		{true, []activation{{n: 4, c: 8, s: 16}}, false},              // flat input: NCHW kernels
		{false, []activation{{n: 4, c: 8, s: 16}, {have: nhwc, n: 4, c: 8, s: 16}}, true},
		{true, []activation{{have: nhwc, n: 4, c: 128, s: 1}}, false}, // one position
		{true, nil, true},
		{false, nil, false},
	} {
		if got := channelsLastFor(c.prefer, c.inputs...); got != c.want {
			t.Errorf("channelsLastFor(%v, %+v) = %v, want %v", c.prefer, c.inputs, got, c.want)
		}
	}
}

// An op that writes the first elements of a buffer in some layout leaves
// every other element's value as it was, whatever layout the buffer was
// in: prepareWrite's reordering, then the write, then the buffer read in
// the op's layout give the new values first and the old ones after.
func TestWritesKeepTheRest(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const size = 240
	old, fresh := counting(size, 0), counting(size, 1000)
	for trial := 0; trial < 3000; trial++ {
		have := randomLayout(rng, size)
		// The op writes need elements in layout lay: often a smaller
		// batch of have's own shape, as in place.
		lay := randomLayout(rng, size)
		if have.nhwc && rng.IntN(2) == 0 {
			lay = nhwcLayout(1+rng.IntN(have.n), have.c, have.s)
		}
		need := lay.count()
		if !lay.nhwc {
			need = rng.IntN(size + 1)
		}
		buf := stored(old, have)
		w := prepareWrite(have, need, lay)
		switch {
		case w.all:
			steps, k := transposes(have, layout{})
			for _, st := range steps[:k] {
				applyTranspose(buf, st)
			}
		case w.tail.n > 0:
			applyTranspose(buf[w.tailAt:], w.tail)
		}
		// The write: new values, stored in lay.
		copy(buf[:need], stored(fresh, lay)[:need])
		// Read back in flat order, as Download would from layout lay.
		steps, k := transposes(lay, layout{})
		for _, st := range steps[:k] {
			applyTranspose(buf, st)
		}
		want := append(append([]float32{}, fresh[:need]...), old[need:]...)
		if !slices.Equal(buf, want) {
			t.Fatalf("buffer in %+v, write of %d in %+v (prep %+v): reads %v, want %v", have, need, lay, w, buf, want)
		}
	}
}
