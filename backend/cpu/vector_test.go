package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"iterbin/backend"
)

// The memory-bound float32 ops, with their SIMD loops and without, against
// the float64 backend: ReLU (NaN and −0 included), Add and batch norm
// forward and backward, over lengths that leave tails after the 8-wide
// loops and over dense (Spatial = 1) and convolutional shapes.
func TestVectorOpsMatchFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	ref := NewFloat64()
	defer ref.Close()
	near := func(what string, got []float32, want []float64, tol float64) {
		t.Helper()
		for i := range want {
			g, w := float64(got[i]), want[i]
			if math.IsNaN(w) != math.IsNaN(g) || math.Abs(g-w) > tol*(1+math.Abs(w)) {
				t.Fatalf("%s: [%d] = %v, float64 gives %v", what, i, g, w)
			}
		}
	}
	for _, simd := range []bool{true, false} {
		b := NewWithOptions(2, simd)
		for _, n := range []int{1, 7, 8, 9, 31, 40000, elementBlock*2 + 13} {
			name := fmt.Sprintf("simd=%v n=%d", simd, n)
			x, dy, c := randVals(rng, n), randVals(rng, n), randVals(rng, n)
			x[0] = float32(math.Copysign(0, -1))
			if n > 2 {
				x[1] = float32(math.NaN())
			}
			x64, dy64, c64 := ref.Alloc(n), ref.Alloc(n), ref.Alloc(n)
			ref.Upload(x64, x)
			ref.Upload(dy64, dy)
			ref.Upload(c64, c)
			y64, dx64, sum64 := ref.Alloc(n), ref.Alloc(n), ref.Alloc(n)
			ref.ReLUForward(y64, x64, n)
			ref.ReLUBackward(dx64, dy64, y64, n)
			ref.Add(sum64, x64, c64, n)
			xt, dyt, ct := upload(b, x), upload(b, dy), upload(b, c)
			y, dx, sum := b.Alloc(n), b.Alloc(n), b.Alloc(n)
			b.ReLUForward(y, xt, n)
			b.ReLUBackward(dx, dyt, y, n)
			b.Add(sum, xt, ct, n)
			for _, op := range []struct {
				what     string
				got, ref backend.Tensor
			}{{"relu", y, y64}, {"relu backward", dx, dx64}, {"add", sum, sum64}} {
				want := make([]float64, n)
				ref.Download64(want, op.ref)
				near(name+" "+op.what, download(b, op.got)[:n], want, 1e-7)
			}
		}
		for _, s := range []backend.BNShape{{N: 5, C: 3, Spatial: 1}, {N: 3, C: 4, Spatial: 37}, {N: 2, C: 3, Spatial: 16}, {N: 4, C: 2, Spatial: 1024}} {
			name := fmt.Sprintf("simd=%v %+v", simd, s)
			cnt := s.Count()
			x, dy := randVals(rng, cnt), randVals(rng, cnt)
			for i := range x {
				x[i] = 3 + 2*x[i] // a mean and a scale to remove
			}
			gamma, beta := randVals(rng, s.C), randVals(rng, s.C)
			run := func(be backend.Backend, dl func(backend.Tensor, int) []float64) [][]float64 {
				xt, dyt, g, bt := be.Alloc(cnt), be.Alloc(cnt), be.Alloc(s.C), be.Alloc(s.C)
				be.Upload(xt, x)
				be.Upload(dyt, dy)
				be.Upload(g, gamma)
				be.Upload(bt, beta)
				y, xhat, dx := be.Alloc(cnt), be.Alloc(cnt), be.Alloc(cnt)
				mean, inv, rm, rv, dg, db := be.Alloc(s.C), be.Alloc(s.C), be.Alloc(s.C), be.Alloc(s.C), be.Alloc(s.C), be.Alloc(s.C)
				be.Fill(rv, 1, s.C)
				be.BatchNormTrain(y, xhat, mean, inv, rm, rv, xt, g, bt, s, 0.1, 1e-5)
				be.BatchNormBackward(dx, dg, db, dyt, xhat, inv, g, s)
				if err := be.Err(); err != nil {
					t.Fatal(err)
				}
				return [][]float64{dl(y, cnt), dl(xhat, cnt), dl(rm, s.C), dl(rv, s.C), dl(dx, cnt), dl(dg, s.C), dl(db, s.C)}
			}
			want := run(ref, func(t backend.Tensor, n int) []float64 {
				v := make([]float64, n)
				ref.Download64(v, t)
				return v
			})
			got := run(b, func(t backend.Tensor, n int) []float64 {
				v := make([]float32, n)
				b.Download(v, t)
				w := make([]float64, n)
				for i, f := range v {
					w[i] = float64(f)
				}
				return w
			})
			for i, what := range []string{"y", "xhat", "running mean", "running var", "dx", "dGamma", "dBeta"} {
				g := make([]float32, len(got[i]))
				for j, v := range got[i] {
					g[j] = float32(v)
				}
				near(name+" "+what, g, want[i], 2e-4)
			}
		}
		b.Close()
	}
}

// The fused ops give the bits of their pairs run one after the other, with
// the SIMD loops and without: batch norm then ReLU, ReLU backward then
// batch-norm backward (which recomputes xhat and the mask), Add then ReLU.
func TestFusedOpsEqualTheirPairs(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, simd := range []bool{true, false} {
		b := NewWithOptions(2, simd)
		for _, s := range []backend.BNShape{{N: 5, C: 3, Spatial: 1}, {N: 3, C: 4, Spatial: 37}, {N: 4, C: 2, Spatial: 1024}} {
			name := fmt.Sprintf("simd=%v %+v", simd, s)
			cnt := s.Count()
			x, dy, other := upload(b, randVals(rng, cnt)), upload(b, randVals(rng, cnt)), upload(b, randVals(rng, cnt))
			gamma, beta := upload(b, randVals(rng, s.C)), upload(b, randVals(rng, s.C))
			type out struct{ y, xhat, dx, dg, db, sum backend.Tensor }
			run := func(fused bool) out {
				o := out{b.Alloc(cnt), b.Alloc(cnt), b.Alloc(cnt), b.Alloc(s.C), b.Alloc(s.C), b.Alloc(cnt)}
				mean, inv, rm, rv := b.Alloc(s.C), b.Alloc(s.C), b.Alloc(s.C), b.Alloc(s.C)
				if fused {
					b.BatchNormReLUTrain(o.y, mean, inv, rm, rv, x, gamma, beta, s, 0.1, 1e-5)
					b.BatchNormReLUBackward(o.dx, o.dg, o.db, dy, x, mean, inv, gamma, beta, s)
					b.AddReLU(o.sum, x, other, cnt)
				} else {
					b.BatchNormTrain(o.y, o.xhat, mean, inv, rm, rv, x, gamma, beta, s, 0.1, 1e-5)
					b.ReLUForward(o.y, o.y, cnt)
					masked := b.Alloc(cnt)
					b.ReLUBackward(masked, dy, o.y, cnt)
					b.BatchNormBackward(o.dx, o.dg, o.db, masked, o.xhat, inv, gamma, s)
					b.Add(o.sum, x, other, cnt)
					b.ReLUForward(o.sum, o.sum, cnt)
				}
				if err := b.Err(); err != nil {
					t.Fatal(err)
				}
				return o
			}
			want, got := run(false), run(true)
			for _, p := range []struct {
				what string
				g, w backend.Tensor
			}{{"y", got.y, want.y}, {"dx", got.dx, want.dx}, {"dGamma", got.dg, want.dg}, {"dBeta", got.db, want.db}, {"add relu", got.sum, want.sum}} {
				if !equal(download(b, p.g), download(b, p.w)) {
					t.Fatalf("%s %s: the fused op differs from its pair", name, p.what)
				}
			}
		}
		b.Close()
	}
}

// The residual block's fused end gives the bits of its unfused sequence,
// with the SIMD loops and without: batch norm, the shortcut added, ReLU;
// and back, ReLU backward into the sum's gradient, then batch-norm
// backward (which recomputes xhat).
func TestFusedResidualEqualsItsSequence(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, simd := range []bool{true, false} {
		b := NewWithOptions(2, simd)
		for _, s := range []backend.BNShape{{N: 5, C: 3, Spatial: 1}, {N: 3, C: 4, Spatial: 37}, {N: 4, C: 2, Spatial: 1024}, {N: 2, C: 70, Spatial: 64}} {
			name := fmt.Sprintf("simd=%v %+v", simd, s)
			cnt := s.Count()
			x, skip, dy := upload(b, randVals(rng, cnt)), upload(b, randVals(rng, cnt)), upload(b, randVals(rng, cnt))
			gamma, beta := upload(b, randVals(rng, s.C)), upload(b, randVals(rng, s.C))
			type out struct{ y, dSum, dx, dg, db, mean, inv, rm, rv backend.Tensor }
			run := func(fused bool) out {
				o := out{b.Alloc(cnt), b.Alloc(cnt), b.Alloc(cnt), b.Alloc(s.C), b.Alloc(s.C), b.Alloc(s.C), b.Alloc(s.C), b.Alloc(s.C), b.Alloc(s.C)}
				if fused {
					b.BatchNormAddReLUTrain(o.y, o.mean, o.inv, o.rm, o.rv, x, skip, gamma, beta, s, 0.1, 1e-5)
					b.BatchNormAddReLUBackward(o.dx, o.dg, o.db, o.dSum, dy, o.y, x, o.mean, o.inv, gamma, s)
				} else {
					bn, xhat := b.Alloc(cnt), b.Alloc(cnt)
					b.BatchNormTrain(bn, xhat, o.mean, o.inv, o.rm, o.rv, x, gamma, beta, s, 0.1, 1e-5)
					b.Add(o.y, bn, skip, cnt)
					b.ReLUForward(o.y, o.y, cnt)
					b.ReLUBackward(o.dSum, dy, o.y, cnt)
					b.BatchNormBackward(o.dx, o.dg, o.db, o.dSum, xhat, o.inv, gamma, s)
				}
				if err := b.Err(); err != nil {
					t.Fatal(err)
				}
				return o
			}
			want, got := run(false), run(true)
			for _, p := range []struct {
				what string
				g, w backend.Tensor
			}{{"y", got.y, want.y}, {"dSum", got.dSum, want.dSum}, {"dx", got.dx, want.dx}, {"dGamma", got.dg, want.dg}, {"dBeta", got.db, want.db},
				{"mean", got.mean, want.mean}, {"invStd", got.inv, want.inv}, {"running mean", got.rm, want.rm}, {"running var", got.rv, want.rv}} {
				if !equal(download(b, p.g), download(b, p.w)) {
					t.Fatalf("%s %s: the fused op differs from its sequence", name, p.what)
				}
			}
			if ones := download(b, got.y); slices.Max(ones) <= 0 || slices.Min(ones) != 0 {
				t.Fatalf("%s: y has no mix of zeros and positives, so the mask is untested", name)
			}
		}
		b.Close()
	}
}

// TestPadRowsEqualsTheGoLoop: the padded-row copy of the convolutions, with
// its SIMD loop, writes what the Go loop writes (zeros before each row,
// the row, and nothing past it), for widths on and off multiples of 8.
func TestPadRowsEqualsTheGoLoop(t *testing.T) {
	simd := simdVectorOps().padRows
	if simd == nil {
		t.Skip("no SIMD padRows on this processor")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct{ rows, w, pad, extra int }{
		{1, 8, 0, 0}, {1, 8, 1, 0}, {32, 32, 1, 0}, {16, 16, 2, 3}, {8, 8, 1, 0}, {7, 56, 3, 1},
		{5, 14, 1, 0}, {3, 7, 2, 2}, {224, 224, 3, 0}, {2, 24, 0, 5},
	} {
		wp := c.w + c.pad + c.extra
		src := randVals(rng, c.rows*c.w)
		got, want := make([]float32, c.rows*wp+3), make([]float32, c.rows*wp+3)
		for i := range got {
			got[i], want[i] = -7, -7 // untouched elements stay -7
		}
		simd(got, src, c.rows, c.w, wp, c.pad)
		padRowsPart(want, src, c.rows, c.w, wp, c.pad)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%+v: [%d] = %v, the Go loop writes %v", c, i, got[i], want[i])
			}
		}
	}
}

// TestInterleaveEqualsTheGoLoops: the stride-2 phase split and its inverse,
// with their SIMD loops, write what the Go loops write, and nothing else;
// interleave undoes deinterleave. The Go loops are checked against the
// definition.
func TestInterleaveEqualsTheGoLoops(t *testing.T) {
	ops := simdVectorOps()
	rng := rand.New(rand.NewPCG(5, 6))
	fill := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = -7 // untouched elements stay -7
		}
		return v
	}
	for _, c := range []struct{ rows, w, gap int }{
		{1, 0, 0}, {1, 1, 0}, {1, 2, 1}, {3, 15, 2}, {2, 16, 0}, {4, 16, 3}, {2, 17, 1}, {3, 31, 0},
		{16, 32, 1}, {5, 33, 2}, {2, 48, 0}, {7, 56, 4}, {1, 65, 0}, {3, 224, 2}, {2, 225, 1},
	} {
		ls, ld := c.w+c.gap, (c.w+1)/2+c.gap // src and phase rows
		src := randVals(rng, c.rows*ls)
		even, odd := fill(c.rows*ld+2), fill(c.rows*ld+2)
		deinterleavePart(even, odd, src, c.rows, c.w, ld, ls)
		for r := range c.rows {
			for q := range c.w {
				got := even[r*ld+q/2]
				if q%2 == 1 {
					got = odd[r*ld+q/2]
				}
				if got != src[r*ls+q] {
					t.Fatalf("%+v: deinterleavePart: row %d column %d is %v, not %v", c, r, q, got, src[r*ls+q])
				}
			}
		}
		back := fill(c.rows*ls + 2)
		interleavePart(back, even, odd, c.rows, c.w, ls, ld, ld)
		for r := range c.rows {
			if !slices.Equal(back[r*ls:][:c.w], src[r*ls:][:c.w]) {
				t.Fatalf("%+v: interleavePart does not undo deinterleavePart in row %d", c, r)
			}
		}
		if ops.deinterleave == nil {
			continue
		}
		gotE, gotO := fill(len(even)), fill(len(odd))
		ops.deinterleave(gotE, gotO, src, c.rows, c.w, ld, ls)
		if !slices.Equal(gotE, even) || !slices.Equal(gotO, odd) {
			t.Fatalf("%+v: SIMD deinterleave %v %v, the Go loop %v %v", c, gotE, gotO, even, odd)
		}
		got := fill(len(back))
		ops.interleave(got, even, odd, c.rows, c.w, ls, ld, ld)
		if !slices.Equal(got, back) {
			t.Fatalf("%+v: SIMD interleave %v, the Go loop %v", c, got, back)
		}
	}
}

// Option A's shortcut with the SIMD stride-2 loops writes what the Go loops
// write, forward and backward, and backward is forward's transpose:
// ⟨forward(x), dy⟩ = ⟨x, backward(dy)⟩.
func TestShortcutAEqualsTheGoLoops(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, s := range []backend.ShortcutShape{
		{N: 3, C: 16, H: 32, W: 32, OC: 32, Stride: 2},
		{N: 2, C: 3, H: 7, W: 9, OC: 5, Stride: 2},
		{N: 2, C: 4, H: 9, W: 33, OC: 8, Stride: 2},
		{N: 2, C: 2, H: 7, W: 8, OC: 4, Stride: 3},
	} {
		in, out := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW()
		x, dy := randVals(rng, in), randVals(rng, out)
		var ys, dxs [][]float32
		for _, simd := range []bool{true, false} {
			b := NewWithOptions(2, simd)
			y, dx := b.Alloc(out), b.Alloc(in)
			b.Fill(y, -7, out)
			b.Fill(dx, -7, in) // every element is written
			b.ShortcutAForward(y, upload(b, x), s)
			b.ShortcutABackward(dx, upload(b, dy), s)
			if err := b.Err(); err != nil {
				t.Fatal(err)
			}
			ys, dxs = append(ys, download(b, y)), append(dxs, download(b, dx))
			b.Close()
		}
		if !equal(ys[0], ys[1]) || !equal(dxs[0], dxs[1]) {
			t.Fatalf("%+v: the SIMD loops differ from the Go loops", s)
		}
		var fwd, bwd float64
		for i := range dy {
			fwd += float64(ys[0][i]) * float64(dy[i])
		}
		for i := range x {
			bwd += float64(x[i]) * float64(dxs[0][i])
		}
		if math.Abs(fwd-bwd) > 1e-9*(1+math.Abs(fwd)) {
			t.Fatalf("%+v: ⟨forward(x), dy⟩ = %v but ⟨x, backward(dy)⟩ = %v", s, fwd, bwd)
		}
	}
}

// Max pooling with 2×2 windows at stride 2, with the SIMD loop and without,
// gives the maxima and argmax positions of a plain scan of each window
// (the first maximum wins ties; a NaN only when it comes first), for
// widths on and off multiples of 16, odd heights and inputs a row or a
// column wide (whose windows reach past the input); and the backward
// routes each gradient to its argmax.
func TestMaxPool2x2EqualsAScanOfEachWindow(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, sh := range []backend.PoolShape{
		{N: 2, C: 3, H: 8, W: 36, Kernel: 2, Stride: 2},
		{N: 1, C: 2, H: 7, W: 33, Kernel: 2, Stride: 2},
		{N: 3, C: 1, H: 32, W: 32, Kernel: 2, Stride: 2},
		{N: 1, C: 1, H: 2, W: 2, Kernel: 2, Stride: 2},
		{N: 2, C: 2, H: 5, W: 1, Kernel: 2, Stride: 2}, // windows reaching past the input
		{N: 1, C: 1, H: 1, W: 25, Kernel: 2, Stride: 2},
	} {
		oh, ow := sh.OutH(), sh.OutW()
		in, out := sh.N*sh.C*sh.H*sh.W, sh.N*sh.C*oh*ow
		x := make([]float32, in)
		for i := range x {
			x[i] = float32(rng.IntN(3)) // many ties
			if rng.IntN(40) == 0 {
				x[i] = float32(math.NaN())
			}
		}
		wantY, wantArg := make([]float32, out), make([]float32, out)
		for p := 0; p < sh.N*sh.C; p++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					o, bestIdx := (p*oh+i)*ow+j, -1
					for kh := 0; kh < 2; kh++ {
						for kw := 0; kw < 2; kw++ {
							if 2*i+kh >= sh.H || 2*j+kw >= sh.W {
								continue
							}
							idx := (2*i+kh)*sh.W + 2*j + kw
							if v := x[p*sh.H*sh.W+idx]; bestIdx < 0 || v > wantY[o] {
								wantY[o], bestIdx = v, idx
							}
						}
					}
					wantArg[o] = float32(bestIdx)
				}
			}
		}
		dy := randVals(rng, out)
		for _, simd := range []bool{true, false} {
			b := NewWithOptions(2, simd)
			y, arg, dx := b.Alloc(out), b.Alloc(out), b.Alloc(in)
			b.MaxPool2DForward(y, arg, upload(b, x), sh)
			b.MaxPool2DBackward(dx, upload(b, dy), arg, sh)
			if err := b.Err(); err != nil {
				t.Fatal(err)
			}
			gotY, gotArg, gotDx := download(b, y), download(b, arg), download(b, dx)
			b.Close()
			if !sameBits(gotY, wantY) || !equal(gotArg, wantArg) {
				t.Fatalf("simd=%v %+v: maxima or argmax differ from a scan of each window", simd, sh)
			}
			wantDx := make([]float32, in)
			for o, a := range wantArg {
				p := o / (oh * ow)
				wantDx[p*sh.H*sh.W+int(a)] += dy[o]
			}
			if !sameBits(gotDx, wantDx) {
				t.Fatalf("simd=%v %+v: the backward does not route dy to the argmax", simd, sh)
			}
		}
	}
}

// sameBits says whether a and b hold the same bits (NaN included).
func sameBits(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

// The Adam update's SIMD loop gives the bits of the Go loop, with and
// without weight decay, on lengths off multiples of 8.
func TestAdamEqualsTheGoLoop(t *testing.T) {
	simd := simdVectorOps().adam
	if simd == nil {
		t.Skip("no SIMD Adam on this processor")
	}
	rng := rand.New(rand.NewPCG(17, 18))
	for _, wd := range []float32{0, 1e-4} {
		for _, n := range []int{1, 8, 29, 1000} {
			k := adamConsts[float32]{b1: 0.9, c1: 1 - float32(0.9), b2: 0.999, c2: 1 - float32(0.999), bc2Sqrt: 0.0447, eps: 1e-8, stepSize: 0.0123, wd: wd}
			w, g, m, v := randVals(rng, n), randVals(rng, n), randVals(rng, n), randVals(rng, n)
			for i := range v {
				v[i] = v[i] * v[i]
			}
			w2, m2, v2 := slices.Clone(w), slices.Clone(m), slices.Clone(v)
			adamLoop(w, g, m, v, k)
			simd(w2, g, m2, v2, k)
			if !equal(w, w2) || !equal(m, m2) || !equal(v, v2) {
				t.Fatalf("wd=%v n=%d: the SIMD Adam update differs from the Go loop", wd, n)
			}
		}
	}
}

// The bias add with its SIMD loop gives the Go loop's bits, and the bias
// gradient (summed per plane in float64 by the SIMD loop, in float32 by
// the Go loop) is the float64 sum within float32 rounding, for planes of
// a feature vector, 8×8 and 32×32.
func TestBiasOpsMatchTheGoLoops(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for _, sh := range []struct{ n, c, spatial int }{{5, 7, 1}, {3, 4, 64}, {2, 3, 1024}} {
		cnt := sh.n * sh.c * sh.spatial
		y0, dy, bias := randVals(rng, cnt), randVals(rng, cnt), randVals(rng, sh.c)
		want := make([]float64, sh.c)
		for i, v := range dy {
			want[i/sh.spatial%sh.c] += float64(v)
		}
		var ys [][]float32
		for _, simd := range []bool{true, false} {
			b := NewWithOptions(2, simd)
			y, db := upload(b, y0), b.Alloc(sh.c)
			b.AddBias(y, upload(b, bias), sh.n, sh.c, sh.spatial)
			b.BiasGrad(db, upload(b, dy), sh.n, sh.c, sh.spatial)
			if err := b.Err(); err != nil {
				t.Fatal(err)
			}
			ys = append(ys, download(b, y))
			for c, g := range download(b, db) {
				if math.Abs(float64(g)-want[c]) > 1e-5*(1+math.Abs(want[c]))*float64(sh.n*sh.spatial) {
					t.Fatalf("simd=%v %+v: dBias[%d] = %v, the float64 sum is %v", simd, sh, c, g, want[c])
				}
			}
			b.Close()
		}
		if !equal(ys[0], ys[1]) {
			t.Fatalf("%+v: the SIMD bias add differs from the Go loop", sh)
		}
		for i, v := range ys[1] {
			if v != y0[i]+bias[i/sh.spatial%sh.c] {
				t.Fatalf("%+v: y[%d] = %v, want %v", sh, i, v, y0[i]+bias[i/sh.spatial%sh.c])
			}
		}
	}
}
