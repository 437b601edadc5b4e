package models

import (
	"math"
	"math/rand/v2"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
)

// Gradient checks run on the float64 CPU backend: analytic gradients from
// Backward against central finite differences of the forward pass.

const (
	fdStep = 1e-6
	fdTol  = 1e-6
)

type f64 struct {
	be *cpu.Backend[float64]
}

func (h f64) put(t backend.Tensor, v []float64) { h.be.Upload64(t, v) }
func (h f64) get(t backend.Tensor, n int) []float64 {
	v := make([]float64, n)
	h.be.Download64(v, t)
	return v
}
func (h f64) tensor(v []float64) backend.Tensor {
	t := h.be.Alloc(len(v))
	h.be.Upload64(t, v)
	return t
}

func normals(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	return v
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// checkGrad compares analytic[i] with the central difference of loss with
// respect to element i of t (n elements).
func checkGrad(t *testing.T, what string, h f64, tt backend.Tensor, n int, analytic []float64, loss func() float64) {
	t.Helper()
	checkGradEvery(t, what, h, tt, n, analytic, loss, 1)
}

// checkGradEvery checks every step-th element only (for large models).
func checkGradEvery(t *testing.T, what string, h f64, tt backend.Tensor, n int, analytic []float64, loss func() float64, step int) {
	t.Helper()
	vals := h.get(tt, n)
	worst := 0.0
	for i := 0; i < len(vals); i += step {
		orig := vals[i]
		vals[i] = orig + fdStep
		h.put(tt, vals)
		lp := loss()
		vals[i] = orig - fdStep
		h.put(tt, vals)
		lm := loss()
		vals[i] = orig
		h.put(tt, vals)
		num := (lp - lm) / (2 * fdStep)
		err := math.Abs(num-analytic[i]) / math.Max(1, math.Abs(num)+math.Abs(analytic[i]))
		worst = math.Max(worst, err)
		if err > fdTol {
			t.Fatalf("%s[%d]: analytic %.10g, finite difference %.10g", what, i, analytic[i], num)
		}
	}
	if err := h.be.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d elements, worst relative error %.2g", what, n, worst)
}

// layerCheck checks dx and every parameter gradient of a layer under the
// loss L = Σ r ⊙ layer(x).
func layerCheck(t *testing.T, h f64, l Layer, in, n int, rng *rand.Rand) {
	x := h.tensor(normals(rng, n*in))
	out := l.OutFeatures()
	r := normals(rng, n*out)
	loss := func() float64 { return dot(h.get(l.Forward(x, n, true), n*out), r) }
	loss()
	dx := l.Backward(h.tensor(r), n, true)
	analyticX := h.get(dx, n*in)
	var analyticP [][]float64
	for _, p := range l.Params() {
		analyticP = append(analyticP, h.get(p.Grad, p.Len()))
	}
	checkGrad(t, l.Name()+" dx", h, x, n*in, analyticX, loss)
	for i, p := range l.Params() {
		checkGrad(t, p.Name, h, p.Value, p.Len(), analyticP[i], loss)
	}
}

func TestDenseGradientsMatchFiniteDifferences(t *testing.T) {
	h := f64{cpu.NewFloat64()}
	rng := rand.New(rand.NewPCG(1, 1))
	l := NewDense(h.be, "fc", 7, 5, 4, Binarizer{STE: STEIdentity}, rng)
	layerCheck(t, h, l, 7, 4, rng)
}

func TestBatchNormGradientsMatchFiniteDifferences(t *testing.T) {
	h := f64{cpu.NewFloat64()}
	rng := rand.New(rand.NewPCG(2, 2))
	for _, spatial := range []int{1, 3} {
		l := NewBatchNorm(h.be, "bn", 4, spatial, 5)
		h.put(l.gamma.Value, normals(rng, 4))
		h.put(l.beta.Value, normals(rng, 4))
		layerCheck(t, h, l, 4*spatial, 5, rng)
	}
}

func TestReLUGradientMatchesFiniteDifferences(t *testing.T) {
	h := f64{cpu.NewFloat64()}
	rng := rand.New(rand.NewPCG(3, 3))
	layerCheck(t, h, NewReLU(h.be, "relu", 9, 3), 9, 3, rng)
}

func TestCrossEntropyGradientMatchesFiniteDifferences(t *testing.T) {
	h := f64{cpu.NewFloat64()}
	rng := rand.New(rand.NewPCG(4, 4))
	const n, classes = 6, 5
	ce := NewCrossEntropy(h.be, classes, n)
	x := h.tensor(normals(rng, n*classes))
	labels := h.tensor([]float64{0, 4, 2, 2, 1, 3})
	sums := h.be.Alloc(3)
	loss := func() float64 {
		h.be.Fill(sums, 0, 3)
		ce.Forward(sums, x, labels, n)
		return h.get(sums, 1)[0] / n
	}
	loss()
	dx := h.get(ce.Backward(labels, n), n*classes)
	checkGrad(t, "log-softmax+NLL dx", h, x, n*classes, dx, loss)
}

func TestMLPGradientsMatchFiniteDifferences(t *testing.T) {
	h := f64{cpu.NewFloat64()}
	rng := rand.New(rand.NewPCG(5, 5))
	const n = 6
	m, err := NewMLP(h.be, MLPSpec{Input: 8, Hidden: []int{6, 5}, Classes: 4}, n, Binarizer{STE: STEIdentity}, rng)
	if err != nil {
		t.Fatal(err)
	}
	modelGradCheck(t, h, m, normals(rng, n*8), []float64{0, 1, 2, 3, 1, 2}, 1)
}

// modelGradCheck checks every parameter gradient of a model's mean loss on
// a batch against finite differences, every element, or about `per` of
// each tensor when per > 1.
func modelGradCheck(t *testing.T, h f64, m *Model, xs, ls []float64, per int) {
	t.Helper()
	n := len(ls)
	x, labels := h.tensor(xs), h.tensor(ls)
	sums := h.be.Alloc(3)
	loss := func() float64 {
		h.be.Fill(sums, 0, 3)
		m.Forward(sums, x, labels, n, true)
		return h.get(sums, 1)[0] / float64(n)
	}
	loss()
	m.Backward(labels, n)
	for _, p := range m.Params() {
		step := 1
		if per > 1 {
			step = max(1, p.Len()/per)
		}
		checkGradEvery(t, p.Name, h, p.Value, p.Len(), h.get(p.Grad, p.Len()), loss, step)
	}
}

// The straight-through estimator cannot be checked by finite differences
// (sign has zero derivative almost everywhere); it is checked against its
// closed form: the gradient of the loss with respect to the binary weights
// sign(W), passed to the latent W unchanged (identity) or where |W| ≤ 1
// (clipped).
func TestSTEGradientEqualsClosedForm(t *testing.T) {
	for _, ste := range []STE{STEIdentity, STEClipped} {
		t.Run(string(ste), func(t *testing.T) {
			h := f64{cpu.NewFloat64()}
			rng := rand.New(rand.NewPCG(6, 6))
			const n, in, out = 5, 6, 4
			l := NewDense(h.be, "fc", in, out, n, Binarizer{STE: ste}, rng)
			w := normals(rng, in*out) // about a third has |w| > 1
			h.put(l.w.Value, w)
			l.SetBinary(true)
			xs, dys := normals(rng, n*in), normals(rng, n*out)
			l.Forward(h.tensor(xs), n, true)
			dx := h.get(l.Backward(h.tensor(dys), n, true), n*in)
			dw := h.get(l.w.Grad, in*out)
			masked := 0
			for o := 0; o < out; o++ {
				for i := 0; i < in; i++ {
					var want float64 // (dyᵀ·x)[o, i]
					for s := 0; s < n; s++ {
						want += dys[s*out+o] * xs[s*in+i]
					}
					if ste == STEClipped && math.Abs(w[o*in+i]) > 1 {
						want = 0
						masked++
					}
					if math.Abs(dw[o*in+i]-want) > 1e-12 {
						t.Fatalf("dW[%d,%d] = %v, want %v", o, i, dw[o*in+i], want)
					}
				}
			}
			if ste == STEClipped && masked == 0 {
				t.Fatal("test data had no latent weight with |w| > 1")
			}
			// dx flows through the binary weights: dx = dy·sign(W).
			for s := 0; s < n; s++ {
				for i := 0; i < in; i++ {
					var want float64
					for o := 0; o < out; o++ {
						want += dys[s*out+o] * math.Copysign(1, w[o*in+i])
					}
					if math.Abs(dx[s*in+i]-want) > 1e-12 {
						t.Fatalf("dx[%d,%d] = %v, want %v", s, i, dx[s*in+i], want)
					}
				}
			}
		})
	}
}

// With the identity STE, the latent gradient of a binary MLP equals the
// finite-difference gradient of the same MLP in float mode whose weights
// are set to sign(W).
func TestBinaryMLPLatentGradientIsGradientAtSignWeights(t *testing.T) {
	h := f64{cpu.NewFloat64()}
	rng := rand.New(rand.NewPCG(7, 7))
	const n = 5
	spec := MLPSpec{Input: 6, Hidden: []int{5}, Classes: 3}
	bin, _ := NewMLP(h.be, spec, n, Binarizer{STE: STEIdentity}, rand.New(rand.NewPCG(1, 1)))
	flt, _ := NewMLP(h.be, spec, n, Binarizer{STE: STEIdentity}, rand.New(rand.NewPCG(1, 1)))
	x := h.tensor(normals(rng, n*6))
	labels := h.tensor([]float64{0, 1, 2, 1, 0})
	sums := h.be.Alloc(3)
	if err := bin.SetBinary(map[string]bool{"fc1": true, "fc2": true}); err != nil {
		t.Fatal(err)
	}
	for _, l := range flt.Binarizable() {
		p := l.Latent()
		h.be.Sign(p.Value, p.Value, p.Len())
	}
	bin.Forward(sums, x, labels, n, true)
	bin.Backward(labels, n)
	loss := func() float64 {
		h.be.Fill(sums, 0, 3)
		flt.Forward(sums, x, labels, n, true)
		return h.get(sums, 1)[0] / n
	}
	for i, l := range bin.Binarizable() {
		p := l.Latent()
		checkGrad(t, "latent "+p.Name, h, flt.Binarizable()[i].Latent().Value, p.Len(), h.get(p.Grad, p.Len()), loss)
	}
}

func TestBinaryDenseEqualsFloatDenseFedSignW(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(8, 8))
	const n, in, out = 7, 33, 9
	bin := NewDense(be, "a", in, out, n, Binarizer{STE: STEIdentity}, rng)
	flt := NewDense(be, "b", in, out, n, Binarizer{STE: STEIdentity}, rng)
	be.Sign(flt.w.Value, bin.w.Value, in*out)
	be.Copy(flt.b.Value, bin.b.Value, out)
	bin.SetBinary(true)
	xs := make([]float32, n*in)
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	x := be.Alloc(n * in)
	be.Upload(x, xs)
	got, want := make([]float32, n*out), make([]float32, n*out)
	be.Download(got, bin.Forward(x, n, true))
	be.Download(want, flt.Forward(x, n, true))
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("binary output[%d] = %v, float layer fed sign(W) gives %v", i, got[i], want[i])
		}
	}
	// The latent weights are untouched by the forward pass.
	lat := make([]float32, in*out)
	be.Download(lat, bin.w.Value)
	twoValued := true
	for _, v := range lat {
		if v != 1 && v != -1 {
			twoValued = false
		}
	}
	if twoValued {
		t.Fatal("latent weights were overwritten by their sign")
	}
}

func TestMLPLayerNamesAndCounts(t *testing.T) {
	be := cpu.New()
	for _, tc := range []struct {
		hidden  []int
		weights int
	}{{[]int{300, 100}, 784*300 + 300*100 + 100*10}, {[]int{784, 784}, 784*784*2 + 784*10}} {
		m, err := NewMLP(be, MLPSpec{Input: 784, Hidden: tc.hidden, Classes: 10}, 2, Binarizer{STE: STEIdentity}, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		total := 0
		for _, l := range m.Binarizable() {
			names = append(names, l.Name())
			total += l.Latent().Len()
		}
		if len(names) != 3 || names[0] != "fc1" || names[2] != "fc3" || total != tc.weights {
			t.Errorf("%v: layers %v with %d weights, want fc1..fc3 with %d", tc.hidden, names, total, tc.weights)
		}
		var all []string
		for _, l := range m.Layers() {
			all = append(all, l.Name())
		}
		want := "[fc1 bn1 relu1 fc2 bn2 relu2 fc3 bn3]"
		if got := fmtNames(all); got != want {
			t.Errorf("layers %s, want %s (BN after the last Dense, no ReLU)", got, want)
		}
		m.Free()
	}
}

func fmtNames(n []string) string {
	s := "["
	for i, v := range n {
		if i > 0 {
			s += " "
		}
		s += v
	}
	return s + "]"
}
