package cpu

import "math"

// vectorOps are SIMD loops for the memory-bound float32 ops (ReLU, Add,
// batch norm and its fusions, the stride-2 phase splits, 2×2 max pooling,
// the bias add, Adam). A nil field means the generic Go loop runs. Sums
// are accumulated in float64 like the Go loops, but in several partial
// sums, so their last bits may differ from the Go loops'.
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

	// The residual block's end (backend.FusedResidual): normalizeAddReLU
	// sets y = relu(gamma·xhat + beta + skip); dySumsMasked sets dSum to
	// dy where out > 0, else 0, and sums it as dySums does, recomputing
	// xhat = (x − mu)·inv; bnDxRecompute is bnDx with xhat recomputed so.
	normalizeAddReLU func(y, x, skip []float32, mu, inv, gamma, beta float32)
	dySumsMasked     func(dSum, dy, out, x []float32, mu, inv float32) (sumDy, sumDyXhat float64)
	bnDxRecompute    func(dx, dy, x []float32, mu, inv, m, sumDy, sumDyXhat, k float32)

	// padRows copies rows rows of w floats, contiguous in src, into dst
	// at a row stride of wp ≥ pad+w, each after pad zeros (the padded
	// copies of the convolutions; nil: padRowsPart).
	padRows func(dst, src []float32, rows, w, wp, pad int)

	// deinterleave splits rows rows of src, w wide and ls apart, into
	// even[r·ld + j] = src[r·ls + 2j] and odd[r·ld + j] = src[r·ls + 2j+1]
	// (the phases of stride-2 convolutions): (w+1)/2 evens and w/2 odds a
	// row. interleave is its inverse, into rows of dst ld apart from rows
	// of even and odd le and lo apart. Nil: the Go loops below.
	deinterleave func(even, odd, src []float32, rows, w, ld, ls int)
	interleave   func(dst, even, odd []float32, rows, w, ld, le, lo int)

	// maxPool2x2 is maxPool2x2Part; adam is adamLoop, bit for bit;
	// addScalar adds b to every element of y.
	maxPool2x2 func(y, arg, r0, r1 []float32, col, w int)
	addScalar  func(y []float32, b float32)
	adam       func(w, g, m, v []float32, p adamConsts[float32])
}

// maxPool2x2Part takes 2×2 windows at stride 2 over rows r0 and r1 of a
// plane w wide: y[j] is the largest of r0[2j], r0[2j+1], r1[2j],
// r1[2j+1], the first in that order unless a later one is greater (as
// MaxPool2DForward scans a window), and arg[j] its index in the plane,
// where r0[0] is at col.
func maxPool2x2Part[T Float](y, arg, r0, r1 []T, col, w int) {
	r0, r1 = r0[:2*len(y)], r1[:2*len(y)]
	arg = arg[:len(y)]
	for j := range y {
		c := 2 * j
		best, idx := r0[c], c
		if v := r0[c+1]; v > best {
			best, idx = v, c+1
		}
		if v := r1[c]; v > best {
			best, idx = v, w+c
		}
		if v := r1[c+1]; v > best {
			best, idx = v, w+c+1
		}
		y[j], arg[j] = best, T(col+idx)
	}
}

// padRowsPart is padRows in Go, the reference loop.
func padRowsPart(dst, src []float32, rows, w, wp, pad int) {
	for r := 0; r < rows; r++ {
		row := dst[r*wp:][:pad+w]
		for i := range row[:pad] { // a few elements: no call
			row[i] = 0
		}
		copy(row[pad:], src[r*w:][:w])
	}
}

// deinterleavePart is deinterleave in Go, the reference loop.
func deinterleavePart(even, odd, src []float32, rows, w, ld, ls int) {
	for r := 0; r < rows; r++ {
		e, o, s := even[r*ld:][:(w+1)/2], odd[r*ld:][:w/2], src[r*ls:][:w]
		for j := range o {
			e[j], o[j] = s[2*j], s[2*j+1]
		}
		if len(e) > len(o) {
			e[len(o)] = s[w-1]
		}
	}
}

// interleavePart is interleave in Go, the reference loop.
func interleavePart(dst, even, odd []float32, rows, w, ld, le, lo int) {
	for r := 0; r < rows; r++ {
		d, e, o := dst[r*ld:][:w], even[r*le:][:(w+1)/2], odd[r*lo:][:w/2]
		for j := range o {
			d[2*j], d[2*j+1] = e[j], o[j]
		}
		if len(e) > len(o) {
			d[w-1] = e[len(o)]
		}
	}
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

// bnGroup is how many channels the SIMD batch-norm loops take together:
// each pass walks the samples in order and, within a sample, the group's
// channel planes, which lie next to each other in memory. Walking one
// channel's planes instead (one plane every C·spatial floats) makes the
// planes of a channel alias in the caches, and reading memory one sample
// at a time keeps the hardware prefetchers streaming. Every channel's sums
// still run over its planes in sample order, so results are the same.
const bnGroup = 64

// bnTrainVector is bnTrainPart with the SIMD loops, run per sample plane.
func bnTrainVector(t bnTask[float32], lo, hi int, v *vectorOps) {
	s, x, y, xhat := t.s, t.x, t.y, t.xhat
	m := float64(s.N * s.Spatial)
	var sq, mu [bnGroup]float64
	var muT, inv [bnGroup]float32
	plane := float64(s.Spatial)
	for g0 := lo; g0 < hi; g0 += bnGroup {
		g1 := min(hi, g0+bnGroup)
		clear(sq[:])
		clear(mu[:])
		// One read of x: each plane's mean and squared deviations (its
		// second pass reads it from L1), merged into the channel's in
		// sample order (Chan et al.'s pairwise update).
		for n := 0; n < s.N; n++ {
			seen := float64(n) * plane
			for c := g0; c < g1; c++ {
				p := x[(n*s.C+c)*s.Spatial:][:s.Spatial]
				mp := v.sum(p) / plane
				sqp := v.sumSqDev(p, mp)
				d := mp - mu[c-g0]
				mu[c-g0] += d * plane / (seen + plane)
				sq[c-g0] += sqp + d*d*seen*plane/(seen+plane)
			}
		}
		for c := g0; c < g1; c++ {
			inv[c-g0] = float32(1 / math.Sqrt(sq[c-g0]/m+float64(t.eps)))
			muT[c-g0] = float32(mu[c-g0])
		}
		for n := 0; n < s.N; n++ {
			for c := g0; c < g1; c++ {
				base := (n*s.C + c) * s.Spatial
				if t.skip != nil {
					v.normalizeAddReLU(y[base:base+s.Spatial], x[base:base+s.Spatial], t.skip[base:base+s.Spatial], muT[c-g0], inv[c-g0], t.gamma[c], t.beta[c])
					continue
				}
				if t.relu {
					v.normalizeReLU(y[base:base+s.Spatial], x[base:base+s.Spatial], muT[c-g0], inv[c-g0], t.gamma[c], t.beta[c])
					continue
				}
				v.normalize(y[base:base+s.Spatial], xhat[base:base+s.Spatial], x[base:base+s.Spatial], muT[c-g0], inv[c-g0], t.gamma[c], t.beta[c])
			}
		}
		for c := g0; c < g1; c++ {
			t.mean[c], t.inv[c] = muT[c-g0], inv[c-g0]
			mom := t.momentum
			t.runMean[c] = float32((1-mom)*t.runMean[c]) + float32(mom*muT[c-g0])
			t.runVar[c] = float32((1-mom)*t.runVar[c]) + float32(mom*float32(sq[c-g0]/(m-1)))
		}
	}
}

// bnBackwardVector is bnBackwardPart with the SIMD loops; y holds dx and
// x holds dy. Channels go in groups, as in bnTrainVector.
func bnBackwardVector(t bnTask[float32], lo, hi int, v *vectorOps) {
	s, dx, dy, xhat := t.s, t.y, t.x, t.xhat
	m := float64(s.N * s.Spatial)
	var sumDy, sumDyXhat [bnGroup]float64
	for g0 := lo; g0 < hi; g0 += bnGroup {
		g1 := min(hi, g0+bnGroup)
		clear(sumDy[:])
		clear(sumDyXhat[:])
		for n := 0; n < s.N; n++ {
			for c := g0; c < g1; c++ {
				base := (n*s.C + c) * s.Spatial
				var a, b float64
				if t.out != nil {
					a, b = v.dySumsMasked(t.dSum[base:base+s.Spatial], dy[base:base+s.Spatial], t.out[base:base+s.Spatial], t.input[base:base+s.Spatial], t.mean[c], t.inv[c])
				} else if t.relu {
					a, b = v.dySumsReLU(dy[base:base+s.Spatial], t.input[base:base+s.Spatial], t.mean[c], t.inv[c], t.gamma[c], t.beta[c])
				} else {
					a, b = v.dySums(dy[base:base+s.Spatial], xhat[base:base+s.Spatial])
				}
				sumDy[c-g0] += a
				sumDyXhat[c-g0] += b
			}
		}
		for c := g0; c < g1; c++ {
			t.dBeta[c], t.dGamma[c] = float32(sumDy[c-g0]), float32(sumDyXhat[c-g0])
		}
		for n := 0; n < s.N; n++ {
			for c := g0; c < g1; c++ {
				base := (n*s.C + c) * s.Spatial
				k := t.gamma[c] * t.inv[c] / float32(m)
				if t.out != nil { // dSum holds dy, masked
					v.bnDxRecompute(dx[base:base+s.Spatial], t.dSum[base:base+s.Spatial], t.input[base:base+s.Spatial], t.mean[c], t.inv[c], float32(m), float32(sumDy[c-g0]), float32(sumDyXhat[c-g0]), k)
					continue
				}
				if t.relu {
					v.bnDxReLU(dx[base:base+s.Spatial], dy[base:base+s.Spatial], t.input[base:base+s.Spatial], t.mean[c], t.inv[c], t.gamma[c], t.beta[c], float32(m), float32(sumDy[c-g0]), float32(sumDyXhat[c-g0]), k)
					continue
				}
				v.bnDx(dx[base:base+s.Spatial], dy[base:base+s.Spatial], xhat[base:base+s.Spatial], float32(m), float32(sumDy[c-g0]), float32(sumDyXhat[c-g0]), k)
			}
		}
	}
}
