package cpu

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"iterbin/backend"
)

func randVals(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func upload(b *Backend[float32], v []float32) backend.Tensor {
	t := b.Alloc(len(v))
	b.Upload(t, v)
	return t
}

func download(b *Backend[float32], t backend.Tensor) []float32 {
	v := make([]float32, t.Len())
	b.Download(v, t)
	return v
}

func TestGemmMatchesNaiveLoopForEveryTranspose(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dims := range [][3]int{{1, 1, 1}, {3, 5, 7}, {33, 17, 65}, {100, 300, 784}} {
		m, n, k := dims[0], dims[1], dims[2]
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			b := New()
			a, bb, c0 := randVals(rng, m*k), randVals(rng, k*n), randVals(rng, m*n)
			at, bt, ct := upload(b, a), upload(b, bb), upload(b, c0)
			b.Gemm(tr[0], tr[1], m, n, k, 0.5, at, bt, 2, ct)
			got := download(b, ct)
			if err := b.Err(); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					var s float64
					for p := 0; p < k; p++ {
						av := a[i*k+p]
						if tr[0] {
							av = a[p*m+i]
						}
						bv := bb[p*n+j]
						if tr[1] {
							bv = bb[j*k+p]
						}
						s += float64(av) * float64(bv)
					}
					want := 0.5*s + 2*float64(c0[i*n+j])
					if d := math.Abs(float64(got[i*n+j]) - want); d > 1e-4*(1+math.Abs(want)) {
						t.Fatalf("%v trans=%v: C[%d,%d] = %v, want %v", dims, tr, i, j, got[i*n+j], want)
					}
				}
			}
		}
	}
}

func TestSignIsTwoValuedWithSignOfZeroPlusOne(t *testing.T) {
	b := New()
	in := []float32{-2, -1e-30, 0, float32(math.Copysign(0, -1)), 1e-30, 3}
	want := []float32{-1, -1, 1, 1, 1, 1}
	x := upload(b, in)
	b.Sign(x, x, len(in))
	got := download(b, x)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("sign(%v) = %v, want %v", in[i], got[i], want[i])
		}
	}
}

func TestSTEClippedMaskAndClip(t *testing.T) {
	b := New()
	w := upload(b, []float32{-1.5, -1, 0.2, 1, 1.0001})
	g := upload(b, []float32{1, 2, 3, 4, 5})
	b.STEClippedMask(g, w, 5)
	if got, want := download(b, g), []float32{0, 2, 3, 4, 0}; !equal(got, want) {
		t.Errorf("masked gradient %v, want %v", got, want)
	}
	b.Clip(w, -1, 1, 5)
	if got, want := download(b, w), []float32{-1, -1, 0.2, 1, 1}; !equal(got, want) {
		t.Errorf("clipped %v, want %v", got, want)
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAdamMatchesPyTorchFormulaOverThreeSteps(t *testing.T) {
	b := NewFloat64()
	w0, grads := []float64{0.5, -0.3}, [][]float64{{0.1, -2}, {0.3, 1}, {-0.2, 0.5}}
	w, g, m, v := b.Alloc(2), b.Alloc(2), b.Alloc(2), b.Alloc(2)
	b.Upload64(w, w0)
	p := backend.AdamParams{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	// Reference: torch.optim.Adam's update written out.
	ref, rm, rv := append([]float64{}, w0...), []float64{0, 0}, []float64{0, 0}
	b1, b2 := float64(p.Beta1), float64(p.Beta2)
	for step, gs := range grads {
		b.Upload64(g, gs)
		p.Step = step + 1
		b.AdamStep(w, g, m, v, 2, p)
		for i := range ref {
			gi := gs[i] + float64(p.WeightDecay)*ref[i]
			rm[i] = b1*rm[i] + (1-b1)*gi
			rv[i] = b2*rv[i] + (1-b2)*gi*gi
			bc1 := 1 - math.Pow(b1, float64(p.Step))
			bc2 := 1 - math.Pow(b2, float64(p.Step))
			ref[i] -= float64(p.LR) / bc1 * rm[i] / (math.Sqrt(rv[i])/math.Sqrt(bc2) + float64(p.Eps))
		}
	}
	got := make([]float64, 2)
	b.Download64(got, w)
	for i := range got {
		if math.Abs(got[i]-ref[i]) > 1e-6 {
			t.Errorf("w[%d] = %v, want %v", i, got[i], ref[i])
		}
	}
}

func TestSGDMomentumMatchesPyTorchFormula(t *testing.T) {
	b := NewFloat64()
	w, g, buf := b.Alloc(1), b.Alloc(1), b.Alloc(1)
	b.Upload64(w, []float64{1})
	p := backend.SGDParams{LR: 0.1, Momentum: 0.9, WeightDecay: 1e-4}
	ref, rbuf := 1.0, 0.0
	for i, gs := range []float64{0.5, -1, 2} {
		b.Upload64(g, []float64{gs})
		b.SGDStep(w, g, buf, 1, p)
		gi := gs + 1e-4*ref
		if i == 0 {
			rbuf = gi
		} else {
			rbuf = 0.9*rbuf + gi
		}
		ref -= 0.1 * rbuf
	}
	got := make([]float64, 1)
	b.Download64(got, w)
	if math.Abs(got[0]-ref) > 1e-6 {
		t.Errorf("w = %v, want %v", got[0], ref)
	}
}

func TestBatchNormTrainUpdatesRunningStatsLikePyTorch(t *testing.T) {
	b := NewFloat64()
	// Two channels, four samples: x[n, c].
	x := []float64{1, 10, 2, 20, 3, 30, 4, 40}
	s := backend.BNShape{N: 4, C: 2, Spatial: 1}
	xt, y, xhat, mean, inv := b.Alloc(8), b.Alloc(8), b.Alloc(8), b.Alloc(2), b.Alloc(2)
	gamma, beta, rm, rv := b.Alloc(2), b.Alloc(2), b.Alloc(2), b.Alloc(2)
	b.Upload64(xt, x)
	b.Fill(gamma, 1, 2)
	b.Fill(rv, 1, 2)
	b.BatchNormTrain(y, xhat, mean, inv, rm, rv, xt, gamma, beta, s, 0.1, 1e-5)
	got := make([]float64, 2)
	b.Download64(got, rm)
	// batch means 2.5 and 25; running = 0.9·0 + 0.1·mean (momentum is a
	// float32 0.1, hence the tolerance).
	if math.Abs(got[0]-0.25) > 1e-7 || math.Abs(got[1]-2.5) > 1e-6 {
		t.Errorf("running mean %v, want [0.25 2.5]", got)
	}
	b.Download64(got, rv)
	// unbiased variances 5/3 and 500/3; running = 0.9·1 + 0.1·var.
	if math.Abs(got[0]-(0.9+0.1*5.0/3)) > 1e-7 || math.Abs(got[1]-(0.9+0.1*500.0/3)) > 1e-5 {
		t.Errorf("running var %v", got)
	}
	yv := make([]float64, 8)
	b.Download64(yv, y)
	// biased variance 1.25 for channel 0: y = (x−2.5)/sqrt(1.25+eps).
	if want := (1 - 2.5) / math.Sqrt(1.25+1e-5); math.Abs(yv[0]-want) > 1e-9 {
		t.Errorf("y[0] = %v, want %v", yv[0], want)
	}
}

func TestNLLLossAccumulatesAndCountsFirstArgmaxOnTies(t *testing.T) {
	b := New()
	x := upload(b, []float32{1, 1, 0, 0, 2, 5})
	logp := b.Alloc(6)
	labels := upload(b, []float32{0, 1})
	sums := upload(b, []float32{10, 1, 0})
	b.LogSoftmax(logp, x, 2, 3)
	b.NLLLoss(sums, logp, labels, 2, 3)
	got := download(b, sums)
	lp := download(b, logp)
	wantLoss := 10 - float64(lp[0]) - float64(lp[4])
	// Row 0 ties classes 0 and 1: the first (0) is the prediction, correct.
	// Row 1 predicts class 2, label 1: wrong. Both labels are in the top 5
	// of 3 classes.
	if math.Abs(float64(got[0])-wantLoss) > 1e-5 || got[1] != 2 || got[2] != 2 {
		t.Errorf("sums = %v, want [%v 2 2]", got, wantLoss)
	}
}

func TestBadSizesAndLabelsAreRecordedNotPanicked(t *testing.T) {
	b := New()
	small := b.Alloc(3)
	b.ReLUForward(small, small, 4)
	var se *backend.SizeError
	if err := b.Err(); !errors.As(err, &se) || se.Need != 4 || se.Have != 3 {
		t.Fatalf("Err() = %v, want a SizeError needing 4, having 3", b.Err())
	}
	b2 := New()
	logp, labels, sums := b2.Alloc(3), upload(b2, []float32{3}), b2.Alloc(3)
	b2.NLLLoss(sums, logp, labels, 1, 3)
	if b2.Err() == nil {
		t.Fatal("a label outside [0, classes) was accepted")
	}
	b3 := New()
	t3 := b3.Alloc(2)
	b3.Free(t3)
	b3.Fill(t3, 1, 2)
	if b3.Err() == nil {
		t.Fatal("using a freed tensor was accepted")
	}
	// A 5×5 kernel on a 3×3 input with stride 2 would round to one output.
	b4 := New()
	s := backend.ConvShape{N: 1, C: 1, H: 3, W: 3, OC: 1, KH: 5, KW: 5, Stride: 2}
	b4.Conv2DForward(b4.Alloc(4), b4.Alloc(9), b4.Alloc(25), s)
	if b4.Err() == nil {
		t.Fatal("a kernel larger than the padded input was accepted")
	}
}

func TestSignScaledIsMeanAbsTimesSign(t *testing.T) {
	b := New()
	src := upload(b, []float32{-1, 2, 0, -3, 0.5, 0.5})
	dst := b.Alloc(6)
	b.SignScaled(dst, src, 2, 3)
	// rows: mean |.| = 1 and 4/3.
	want := []float32{-1, 1, 1, -4.0 / 3, 4.0 / 3, 4.0 / 3}
	got := download(b, dst)
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-6 {
			t.Fatalf("SignScaled = %v, want %v", got, want)
		}
	}
}

func TestNLLLossTop5(t *testing.T) {
	b := New()
	// 7 classes; the label's score is the 6th largest in row 0, the 5th in row 1.
	x := upload(b, []float32{7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1})
	labels := upload(b, []float32{5, 4})
	logp, sums := b.Alloc(14), b.Alloc(3)
	b.LogSoftmax(logp, x, 2, 7)
	b.NLLLoss(sums, logp, labels, 2, 7)
	if got := download(b, sums); got[1] != 0 || got[2] != 1 {
		t.Errorf("top-1 %v top-5 %v, want 0 and 1", got[1], got[2])
	}
}

// TestAsyncDownloadKeepsTheValuesWhenQueued: a copy queued with
// DownloadAsync holds the values of the time it was queued, not those of
// later work, per slot; bad slots and sizes are errors.
func TestAsyncDownloadKeepsTheValuesWhenQueued(t *testing.T) {
	b := New()
	defer b.Close()
	var async backend.AsyncDownloader = b
	x := b.Alloc(5)
	b.Fill(x, 1.5, 5)
	async.DownloadAsync(0, x, 3)
	b.Fill(x, -2, 5)
	async.DownloadAsync(1, x, 2)
	b.Fill(x, 7, 5)
	got0, got1 := make([]float32, 3), make([]float32, 2)
	if err := async.WaitDownload(0, got0); err != nil {
		t.Fatal(err)
	}
	if err := async.WaitDownload(1, got1); err != nil {
		t.Fatal(err)
	}
	if got0[0] != 1.5 || got0[2] != 1.5 || got1[0] != -2 || got1[1] != -2 {
		t.Fatalf("slot 0 %v (want 1.5s), slot 1 %v (want -2s)", got0, got1)
	}
	if err := async.WaitDownload(1, make([]float32, 3)); err == nil {
		t.Fatal("reading 3 values from a slot of 2 was not an error")
	}
	b2 := New()
	defer b2.Close()
	b2.DownloadAsync(2, b2.Alloc(1), 1)
	if err := b2.Err(); err == nil || !strings.Contains(err.Error(), "slot 2") {
		t.Fatalf("slot 2: error %v", err)
	}
}
