// Runs in both builds: the bookkeeping of channels-last layouts
// (layout.go), checked on host slices that stand for device buffers.

package cuda

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// deviceBuf models a device buffer of float32s as its halves (uint16,
// little-endian): float32 element e in halves 2e and 2e+1, the k-th bf16
// element of a layout in half k, as the device stores them.
type deviceBuf []uint16

func newDeviceBuf(size int) deviceBuf { return make(deviceBuf, 2*size) }

func (b deviceBuf) f32(e int) float32 {
	return math.Float32frombits(uint32(b[2*e]) | uint32(b[2*e+1])<<16)
}

func (b deviceBuf) setF32(e int, v float32) {
	bits := math.Float32bits(v)
	b[2*e], b[2*e+1] = uint16(bits), uint16(bits>>16)
}

// nhwcIndex is where an n×c×s activation stored NHWC keeps its flat
// element e.
func nhwcIndex(l layout, e int) int {
	i, rem := e/(l.c*l.s), e%(l.c*l.s)
	ch, j := rem/l.s, rem%l.s
	return (i*l.s+j)*l.c + ch
}

// get reads flat element e of a buffer in layout l.
func (b deviceBuf) get(l layout, e int) float32 {
	if !l.nhwc || e >= l.count() {
		return b.f32(e)
	}
	k := nhwcIndex(l, e)
	if l.half.on() {
		return math.Float32frombits(uint32(b[k]) << 16)
	}
	return b.f32(k)
}

// set writes flat element e of a buffer in layout l (as bf16, truncated:
// the tests use values bf16 holds exactly).
func (b deviceBuf) set(l layout, e int, v float32) {
	switch {
	case !l.nhwc || e >= l.count():
		b.setF32(e, v)
	case l.half.on():
		b[nhwcIndex(l, e)] = uint16(math.Float32bits(v) >> 16)
	default:
		b.setF32(nhwcIndex(l, e), v)
	}
}

// apply runs r on the elements from element at on, as the device does:
// they are read in r.from at byte at·from.elemBytes() and written in r.to
// at byte 4·at.
func (b deviceBuf) apply(r reorder, at int) {
	n, c, s := r.shape()
	cnt := n * c * s
	src, dst := b[at*r.from.elemBytes()/2:], b[2*at:]
	vals := make([]float32, cnt)
	for e := range vals {
		vals[e] = src.get(r.from, e)
	}
	for e, v := range vals {
		dst.set(r.to, e, v)
	}
}

// stored is a buffer holding values in layout l.
func stored(values []float32, l layout) deviceBuf {
	b := newDeviceBuf(len(values))
	for e, v := range values {
		b.set(l, e, v)
	}
	return b
}

// read is every element of a buffer in layout l, in flat order.
func (b deviceBuf) read(l layout) []float32 {
	v := make([]float32, len(b)/2)
	for e := range v {
		v[e] = b.get(l, e)
	}
	return v
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
// positions, half of those as bf16.
func randomLayout(rng *rand.Rand, size int) layout {
	switch rng.IntN(4) {
	case 0:
		return layout{}
	case 1:
		return nhwcLayout(1+rng.IntN(4), 1, 1+rng.IntN(9))
	}
	c, s := []int{2, 3, 4, 5}[rng.IntN(4)], []int{2, 3, 4, 6}[rng.IntN(4)]
	l := nhwcLayout(1+rng.IntN(size/(c*s)), c, s)
	if rng.IntN(2) == 0 {
		l = l.inHalf(BF16)
	}
	return l
}

// The values the layout tests store: integers bf16 holds exactly, the old
// ones 0, 1, … and the new ones −1, −2, ….
const testBufSize = 240

var oldValues, newValues = counting(testBufSize, 0), counting(testBufSize, -testBufSize)

// Whatever a buffer's layout, the reorderings to another one leave it
// holding the same values in the new layout, every element of it; the
// only refusal is a bf16 layout the buffer does not hold.
func TestReordersReachTheWantedLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 3000; trial++ {
		have, want := randomLayout(rng, testBufSize), randomLayout(rng, testBufSize)
		buf := stored(oldValues, have)
		steps, k, err := reorders(have, want)
		if err != nil {
			if !want.half.on() || have.holds(want) {
				t.Fatalf("%v → %v: %v", have, want, err)
			}
			continue
		}
		lay := have
		for _, st := range steps[:k] {
			if st.from != lay || st.to.half.on() {
				t.Fatalf("%v → %v: step %+v from %v", have, want, st, lay)
			}
			buf.apply(st, 0)
			lay = st.to
		}
		if !lay.holds(want) {
			t.Fatalf("%v → %v via %+v ends in %v", have, want, steps[:k], lay)
		}
		if got := buf.read(lay); !slices.Equal(got, oldValues) {
			t.Fatalf("%v → %v via %+v: the buffer reads %v, want %v", have, want, steps[:k], got, oldValues)
		}
	}
}

func TestReordersOnlyWhereNeeded(t *testing.T) {
	big, small := nhwcLayout(8, 4, 9), nhwcLayout(5, 4, 9)
	for _, c := range []struct {
		have, want layout
		steps      int
		fails      bool
	}{
		{layout{}, layout{}, 0, false},
		{big, big, 0, false},
		{big, small, 0, false},               // a smaller batch is a prefix
		{small, big, 2, false},               // a larger one is not
		{big, nhwcLayout(8, 9, 4), 2, false}, // the same count, other channels
		{big, layout{}, 1, false},
		{layout{}, big, 1, false},
		{nhwcLayout(8, 1, 36), layout{}, 0, false}, // one channel: flat already
		{big, nhwcLayout(8, 36, 1), 1, false},      // one position: flat
		{big.inHalf(BF16), small.inHalf(BF16), 0, false},
		{big.inHalf(BF16), small, 1, false},    // widened, all of it, in place
		{small.inHalf(BF16), big, 2, false},    // to flat float32, then NHWC
		{big.inHalf(BF16), layout{}, 1, false}, // widened on the way to flat
		{big, big.inHalf(BF16), 0, true},       // never rounded in place
		{layout{}, small.inHalf(BF16), 0, true},
		{big.inHalf(FP16), small.inHalf(FP16), 0, false},
		{big.inHalf(FP16), small, 1, false},             // widened in place
		{big.inHalf(FP16), small.inHalf(BF16), 0, true}, // another format: never converted in place
		{big.inHalf(BF16), big.inHalf(FP16), 0, true},
	} {
		steps, k, err := reorders(c.have, c.want)
		if k != c.steps || (err != nil) != c.fails {
			t.Errorf("%v → %v: %+v, %v; want %d steps, failing %v", c.have, c.want, steps[:k], err, c.steps, c.fails)
		}
	}
}

func TestElementwiseLayout(t *testing.T) {
	a, b := nhwcLayout(2, 4, 9), nhwcLayout(3, 4, 9)
	a16, b16 := a.inHalf(BF16), b.inHalf(BF16)
	for _, c := range []struct {
		n      int
		halfOK bool
		inputs []layout
		want   layout
	}{
		{72, true, nil, layout{}},
		{72, true, []layout{{}, a}, a},               // the NHWC input sets the order
		{72, true, []layout{a, b}, a},                // the first that covers exactly n
		{72, true, []layout{b, {}}, layout{}},        // b covers more than the op's elements
		{108, true, []layout{a, b}, b},               // …or exactly them
		{50, true, []layout{a, a}, layout{}},         // part of a tensor: flat
		{72, true, []layout{{}, {}}, layout{}},       // all flat
		{72, true, []layout{a16, a16}, a16},          // bf16 where every input is
		{72, true, []layout{a16, b16}, a16},          // (a larger batch holds it)
		{72, false, []layout{a16, a16}, a},           // not without 16-bit kernels
		{72, true, []layout{a16, a.inHalf(FP16)}, a}, // nor with another format
		{72, true, []layout{a16, a}, a},              // nor with a float32 input
		{72, true, []layout{a16, {}}, a},
		{72, true, []layout{a, a16}, a},
	} {
		if got := elementwiseLayout(c.n, c.halfOK, c.inputs...); got != c.want {
			t.Errorf("elementwiseLayout(%d, %v, %v) = %v, want %v", c.n, c.halfOK, c.inputs, got, c.want)
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
		{false, []activation{{have: nhwc.inHalf(BF16), n: 4, c: 8, s: 16}}, true},
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

func TestHalfFor(t *testing.T) {
	f32, b16, h16 := nhwcLayout(4, 8, 16), nhwcLayout(4, 8, 16).inHalf(BF16), nhwcLayout(4, 8, 16).inHalf(FP16)
	in := func(l layout) activation { return activation{have: l, n: 4, c: 8, s: 16} }
	out := [][3]int{{4, 8, 16}}
	for _, c := range []struct {
		h      halfFormat
		outs   [][3]int
		inputs []activation
		want   bool
	}{
		{BF16, out, []activation{in(b16)}, true},
		{BF16, out, []activation{in(b16), in(b16)}, true},
		{FP16, out, []activation{in(h16)}, true},
		{BF16, out, []activation{in(h16)}, false},          // another format
		{BF16, out, []activation{in(b16), in(f32)}, false}, // one input in float32
		{BF16, out, []activation{in(layout{})}, false},
		{BF16, out, []activation{{have: b16, n: 2, c: 8, s: 16}}, true}, // a smaller batch
		{BF16, [][3]int{{4, 8, 1}}, []activation{in(b16)}, false},       // an output NHWC stores flat
		{BF16, out, nil, true},                                          // no input: storage decides
		{"", out, nil, false},
		{"", out, []activation{in(b16)}, false}, // no 16-bit storage
	} {
		if got := halfFor(c.h, c.outs, c.inputs...); got != c.want {
			t.Errorf("halfFor(%q, %v, %+v) = %v, want %v", c.h, c.outs, c.inputs, got, c.want)
		}
	}
}

func TestLayoutAs(t *testing.T) {
	in := nhwcLayout(4, 8, 81)
	for _, c := range []struct {
		in, want layout
		n, c, s  int
	}{
		{in, nhwcLayout(4, 8, 25), 4, 8, 25},                             // a pooled output
		{in.inHalf(BF16), nhwcLayout(4, 16, 25).inHalf(BF16), 4, 16, 25}, // a shortcut's, in bf16
		{in.inHalf(BF16), layout{}, 4, 8, 1},                             // one position: flat float32
		{layout{}, layout{}, 4, 8, 25},                                   // NCHW ops
	} {
		if got := c.in.as(c.n, c.c, c.s); got != c.want {
			t.Errorf("%v.as(%d, %d, %d) = %v, want %v", c.in, c.n, c.c, c.s, got, c.want)
		}
	}
}

// An op that writes the first elements of a buffer in some layout leaves
// every other element's value as it was, whatever layout the buffer was
// in: prepareWrite's reordering, then the write, then the buffer read in
// the op's layout give the new values first and the old ones after.
func TestWritesKeepTheRest(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 4000; trial++ {
		have := randomLayout(rng, testBufSize)
		// The op writes need elements in layout lay: often a smaller
		// batch of have's own shape, as in place.
		lay := randomLayout(rng, testBufSize)
		if have.nhwc && rng.IntN(2) == 0 {
			lay = have
			lay.n = 1 + rng.IntN(have.n)
		}
		need := lay.count()
		if !lay.nhwc {
			need = rng.IntN(testBufSize + 1)
		}
		buf := stored(oldValues, have)
		w := prepareWrite(have, need, lay)
		switch {
		case w.all:
			steps, k, err := reorders(have, layout{})
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range steps[:k] {
				buf.apply(st, 0)
			}
		case w.tail.from.n > 0:
			buf.apply(w.tail, w.tailAt)
		}
		// The write: new values, stored in lay.
		for e := 0; e < need; e++ {
			buf.set(lay, e, newValues[e])
		}
		want := append(slices.Clone(newValues[:need]), oldValues[need:]...)
		if got := buf.read(lay); !slices.Equal(got, want) {
			t.Fatalf("buffer in %v, write of %d in %v (prep %+v): reads %v, want %v", have, need, lay, w, got, want)
		}
	}
}

// An NHWC pass takes 16-byte packs of channels where the channel count
// is a multiple of the pack, else one element per thread.
func TestPackedPass(t *testing.T) {
	for _, c := range []struct {
		lay     layout
		c       int
		name    string
		threads int
	}{
		{nhwcLayout(2, 64, 9), 64, "bn_apply_nhwc_vec_f32", 2 * 64 * 9 / 4},
		{nhwcLayout(2, 12, 9), 12, "bn_apply_nhwc_vec_f32", 2 * 12 * 9 / 4},
		{nhwcLayout(2, 6, 9), 6, "bn_apply_nhwc_f32", 2 * 6 * 9},
		{nhwcLayout(2, 40, 9).inHalf(BF16), 40, "bn_apply_nhwc_vec_bf16", 2 * 40 * 9 / 8},
		{nhwcLayout(2, 12, 9).inHalf(FP16), 12, "bn_apply_nhwc_f16", 2 * 12 * 9},
		{nhwcLayout(2, 16, 9).inHalf(FP16), 16, "bn_apply_nhwc_vec_f16", 2 * 16 * 9 / 8},
	} {
		name, threads := packedPass("bn_apply_nhwc_", c.lay, c.c, c.lay.count(), 0x7f0000, 0x7f0100)
		if name != c.name || threads != c.threads {
			t.Errorf("packedPass over %v: %s with %d threads, want %s with %d", c.lay, name, threads, c.name, c.threads)
		}
	}
	// A pointer off a pack's alignment: one element per thread.
	lay := nhwcLayout(2, 64, 9)
	if name, threads := packedPass("bn_apply_nhwc_", lay, 64, lay.count(), 0x7f0000, 0x7f0008); name != "bn_apply_nhwc_f32" || threads != lay.count() {
		t.Errorf("packedPass with a pointer 8 bytes off 16: %s with %d threads, want bn_apply_nhwc_f32 with %d", name, threads, lay.count())
	}
}

// An elementwise pass takes a thread per 16-byte pack, the last one's
// share rounded up.
func TestPackThreads(t *testing.T) {
	for _, c := range []struct {
		n      int
		suffix string
		want   int
	}{{0, "f32", 0}, {3, "f32", 1}, {8, "f32", 2}, {10, "f32", 3}, {10, "bf16", 2}, {16, "f16", 2}, {17, "f16", 3}} {
		if got := packThreads(c.n, c.suffix); got != c.want {
			t.Errorf("packThreads(%d, %q) = %d, want %d", c.n, c.suffix, got, c.want)
		}
	}
}

// The partial sums' block: up to 32 lanes of packs, rows a power of two,
// at most 256 threads, and enough blocks to span the channels.
func TestNHWCPartialBlock(t *testing.T) {
	for _, c := range []struct{ c, w, lanes, rows, chunks int }{
		{64, 1, 32, 8, 2}, {64, 8, 8, 32, 1}, {64, 4, 16, 16, 1}, {5, 1, 5, 32, 1}, {300, 4, 32, 8, 3}, {8, 8, 1, 256, 1},
	} {
		lanes, rows, chunks := nhwcPartialBlock(c.c, c.w)
		if lanes != c.lanes || rows != c.rows || chunks != c.chunks {
			t.Errorf("nhwcPartialBlock(%d, %d) = %d lanes × %d rows, %d chunks; want %d × %d, %d", c.c, c.w, lanes, rows, chunks, c.lanes, c.rows, c.chunks)
		}
	}
}
