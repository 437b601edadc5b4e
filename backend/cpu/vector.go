package cpu

import "math"

// vectorOps are SIMD loops for the memory-bound float32 ops (ReLU, Add,
// batch norm). A nil field means the generic Go loop runs. Sums are
// accumulated in float64 like the Go loops, but in several partial sums,
// so their last bits may differ from the Go loops'.
type vectorOps struct {
	relu         func(y, x []float32)
	reluBackward func(dx, dy, y []float32)
	add          func(y, a, b []float32)
	// sum returns Σ x; sumSqDev returns Σ (x − mu)².
	sum      func(x []float32) float64
	sumSqDev func(x []float32, mu float64) float64
	// dySums returns Σ dy and Σ dy·xhat.
	dySums func(dy, xhat []float32) (sumDy, sumDyXhat float64)
	// normalize sets xhat = (x − mu)·inv and y = gamma·xhat + beta.
	normalize func(y, xhat, x []float32, mu, inv, gamma, beta float32)
	// bnDx sets dx = k·((m·dy − sumDy) − xhat·sumDyXhat).
	bnDx func(dx, dy, xhat []float32, m, sumDy, sumDyXhat, k float32)

	// The fused versions (backend.Fused), which keep no xhat:
	// normalizeReLU sets y = relu(gamma·xhat + beta); dySumsReLU and
	// bnDxReLU recompute xhat = (x − mu)·inv and take dy where
	// gamma·xhat + beta > 0; addReLU sets y = max(a + b, 0).
	normalizeReLU func(y, x []float32, mu, inv, gamma, beta float32)
	dySumsReLU    func(dy, x []float32, mu, inv, gamma, beta float32) (sumDy, sumDyXhat float64)
	bnDxReLU      func(dx, dy, x []float32, mu, inv, gamma, beta, m, sumDy, sumDyXhat, k float32)
	addReLU       func(y, a, b []float32)
}

// relu is max(v, 0) with NaN giving 0, as ReLUForward.
func relu[T Float](v T) T {
	if v > 0 {
		return v
	}
	return 0
}

// masked is dy where the ReLU output y is positive, else 0, as
// ReLUBackward.
func masked[T Float](dy, y T) T {
	if y > 0 {
		return dy
	}
	return 0
}

// vectorMin is the shortest run worth a SIMD call; batch norms of dense
// layers (one value per sample and channel) stay on the Go loops.
const vectorMin = 16

// bnVector returns the float32 views of a batch norm's tensors when its
// SIMD loops apply.
func bnVector[T Float](v *vectorOps, spatial int, x []T) bool {
	_, ok := any(x).([]float32)
	return ok && v.sum != nil && spatial >= vectorMin
}

// bnTrainVector is bnTrainPart with the SIMD loops, run per sample plane.
func bnTrainVector(t bnTask[float32], lo, hi int, v *vectorOps) {
	s, x, y, xhat := t.s, t.x, t.y, t.xhat
	m := float64(s.N * s.Spatial)
	for c := lo; c < hi; c++ {
		var sum float64
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			sum += v.sum(x[base : base+s.Spatial])
		}
		mu := sum / m
		var sq float64
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			sq += v.sumSqDev(x[base:base+s.Spatial], mu)
		}
		inv := float32(1 / math.Sqrt(sq/m+float64(t.eps)))
		muT := float32(mu)
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			if t.relu {
				v.normalizeReLU(y[base:base+s.Spatial], x[base:base+s.Spatial], muT, inv, t.gamma[c], t.beta[c])
				continue
			}
			v.normalize(y[base:base+s.Spatial], xhat[base:base+s.Spatial], x[base:base+s.Spatial], muT, inv, t.gamma[c], t.beta[c])
		}
		t.mean[c], t.inv[c] = muT, inv
		mom := t.momentum
		t.runMean[c] = (1-mom)*t.runMean[c] + mom*muT
		t.runVar[c] = (1-mom)*t.runVar[c] + mom*float32(sq/(m-1))
	}
}

// bnBackwardVector is bnBackwardPart with the SIMD loops; y holds dx and
// x holds dy.
func bnBackwardVector(t bnTask[float32], lo, hi int, v *vectorOps) {
	s, dx, dy, xhat := t.s, t.y, t.x, t.xhat
	m := float64(s.N * s.Spatial)
	for c := lo; c < hi; c++ {
		var sumDy, sumDyXhat float64
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			var a, b float64
			if t.relu {
				a, b = v.dySumsReLU(dy[base:base+s.Spatial], t.input[base:base+s.Spatial], t.mean[c], t.inv[c], t.gamma[c], t.beta[c])
			} else {
				a, b = v.dySums(dy[base:base+s.Spatial], xhat[base:base+s.Spatial])
			}
			sumDy += a
			sumDyXhat += b
		}
		t.dBeta[c], t.dGamma[c] = float32(sumDy), float32(sumDyXhat)
		k := t.gamma[c] * t.inv[c] / float32(m)
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			if t.relu {
				v.bnDxReLU(dx[base:base+s.Spatial], dy[base:base+s.Spatial], t.input[base:base+s.Spatial], t.mean[c], t.inv[c], t.gamma[c], t.beta[c], float32(m), float32(sumDy), float32(sumDyXhat), k)
				continue
			}
			v.bnDx(dx[base:base+s.Spatial], dy[base:base+s.Spatial], xhat[base:base+s.Spatial], float32(m), float32(sumDy), float32(sumDyXhat), k)
		}
	}
}
