package cpu

import "math"

// Batch norms of feature vectors (BatchNorm1d: one value per sample and
// channel) keep a sample's channels next to each other, so these loops
// walk the samples in order and, within a sample, a group of bnGroup
// channels. Each channel's sums still run over the samples in order with
// the arithmetic of bnTrainPart and bnBackwardPart, so the results are
// the same bits; only the memory order changes (a channel-at-a-time walk
// reads one value every C).

// bnTrainRows is bnTrainPart for spatial 1.
func bnTrainRows[T Float](t bnTask[T], lo, hi int) {
	s, x := t.s, t.x
	m := float64(s.N)
	var sum, sq [bnGroup]float64
	var muT, inv [bnGroup]T
	for g0 := lo; g0 < hi; g0 += bnGroup {
		g1 := min(hi, g0+bnGroup)
		clear(sum[:])
		clear(sq[:])
		for n := 0; n < s.N; n++ {
			for c, v := range x[n*s.C+g0 : n*s.C+g1] {
				sum[c] += float64(v)
			}
		}
		for n := 0; n < s.N; n++ {
			for c, v := range x[n*s.C+g0 : n*s.C+g1] {
				d := float64(v) - sum[c]/m
				sq[c] += d * d
			}
		}
		for c := range g1 - g0 {
			inv[c] = T(1 / math.Sqrt(sq[c]/m+float64(t.eps)))
			muT[c] = T(sum[c] / m)
		}
		gn := g1 - g0
		gamma, beta := t.gamma[g0:g1], t.beta[g0:g1]
		mu, iv := muT[:gn], inv[:gn]
		for n := 0; n < s.N; n++ {
			i := n*s.C + g0
			xs, y := x[i:][:gn], t.y[i:][:gn]
			switch {
			case t.skip != nil:
				skip := t.skip[i:][:gn]
				for c, v := range xs {
					y[c] = relu(T(gamma[c]*((v-mu[c])*iv[c])) + beta[c] + skip[c])
				}
			case t.relu:
				for c, v := range xs {
					y[c] = relu(T(gamma[c]*((v-mu[c])*iv[c])) + beta[c])
				}
			default:
				xhat := t.xhat[i:][:gn]
				for c, v := range xs {
					h := (v - mu[c]) * iv[c]
					xhat[c], y[c] = h, T(gamma[c]*h)+beta[c]
				}
			}
		}
		mom := T(t.momentum)
		for c := g0; c < g1; c++ {
			t.mean[c], t.inv[c] = muT[c-g0], inv[c-g0]
			t.runMean[c] = T((1-mom)*t.runMean[c]) + T(mom*muT[c-g0])
			t.runVar[c] = T((1-mom)*t.runVar[c]) + T(mom*T(sq[c-g0]/(m-1)))
		}
	}
}

// bnBackwardRows is bnBackwardPart for spatial 1; y holds dx and x holds
// dy.
func bnBackwardRows[T Float](t bnTask[T], lo, hi int) {
	s := t.s
	m := float64(s.N)
	var sumDy, sumDyXhat [bnGroup]float64
	var h, d [bnGroup]T // one sample's xhat and dy, as the unfused ops see them
	for g0 := lo; g0 < hi; g0 += bnGroup {
		g1 := min(hi, g0+bnGroup)
		gn := g1 - g0
		clear(sumDy[:])
		clear(sumDyXhat[:])
		for n := 0; n < s.N; n++ {
			bnRowAt(&t, n*s.C+g0, g0, h[:gn], d[:gn])
			if t.dSum != nil {
				copy(t.dSum[n*s.C+g0:][:gn], d[:gn])
			}
			for c := range gn {
				sumDy[c] += float64(d[c])
				sumDyXhat[c] += float64(d[c]) * float64(h[c])
			}
		}
		var k, sDy, sDyXhat [bnGroup]T
		for c := g0; c < g1; c++ {
			t.dBeta[c], t.dGamma[c] = T(sumDy[c-g0]), T(sumDyXhat[c-g0])
			k[c-g0] = t.gamma[c] * t.inv[c] / T(m)
			sDy[c-g0], sDyXhat[c-g0] = T(sumDy[c-g0]), T(sumDyXhat[c-g0])
		}
		mT := T(m)
		for n := 0; n < s.N; n++ {
			bnRowAt(&t, n*s.C+g0, g0, h[:gn], d[:gn])
			dx := t.y[n*s.C+g0:][:gn]
			for c := range dx {
				// dx = gamma·invStd/m · (m·dy − Σdy − xhat·Σ(dy·xhat))
				dx[c] = k[c] * (T(mT*d[c]) - sDy[c] - T(h[c]*sDyXhat[c]))
			}
		}
	}
}

// bnRowAt sets h and d to xhat and dy of the channels c0, c0+1, … of one
// sample, from element i, as the unfused ops see them (bnBackwardPart's
// at).
func bnRowAt[T Float](t *bnTask[T], i, c0 int, h, d []T) {
	dy := t.x[i:][:len(d)]
	switch {
	case t.out != nil:
		in, out := t.input[i:][:len(d)], t.out[i:][:len(d)]
		mean, inv := t.mean[c0:][:len(d)], t.inv[c0:][:len(d)]
		for c := range d {
			h[c], d[c] = (in[c]-mean[c])*inv[c], masked(dy[c], out[c])
		}
	case t.relu:
		in := t.input[i:][:len(d)]
		mean, inv := t.mean[c0:][:len(d)], t.inv[c0:][:len(d)]
		gamma, beta := t.gamma[c0:][:len(d)], t.beta[c0:][:len(d)]
		for c := range d {
			hc := (in[c] - mean[c]) * inv[c]
			h[c], d[c] = hc, masked(dy[c], T(gamma[c]*hc)+beta[c])
		}
	default:
		copy(h, t.xhat[i:][:len(d)])
		copy(d, dy)
	}
}
