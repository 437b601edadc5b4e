package cpu

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"iterbin/backend"
)

// The feature-vector batch norm loops (spatial 1, samples outer) give the
// bits of the channel-at-a-time reference in float32, in training (plain,
// with ReLU, with a skip added) and backward (plain, recomputing xhat and
// the ReLU mask, and with the mask from an output), for channel counts on
// and off the group size. In float64 they agree to 1e-12: the products'
// explicit roundings that keep float32 free of fused multiply-adds
// (GOAMD64=v3) are no-ops in float64, where the compiler may fuse the two
// loops differently.
func TestBatchNormRowsEqualChannels(t *testing.T) {
	t.Run("float32", func(t *testing.T) { batchNormRowsCheck[float32](t) })
	t.Run("float64", func(t *testing.T) { batchNormRowsCheck[float64](t) })
}

func batchNormRowsCheck[T Float](t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	same := func(a, b []T) bool {
		if _, f32 := any(a).([]float32); f32 {
			return slices.Equal(a, b)
		}
		return slices.EqualFunc(a, b, func(x, y T) bool { return math.Abs(float64(x-y)) <= 1e-12*(1+math.Abs(float64(y))) })
	}
	vals := func(n int) []T {
		v := make([]T, n)
		for i := range v {
			v[i] = T(3 + 2*rng.NormFloat64())
		}
		return v
	}
	for _, s := range []backend.BNShape{{N: 7, C: 5, Spatial: 1}, {N: 100, C: 300, Spatial: 1}, {N: 2, C: bnGroup + 3, Spatial: 1}} {
		cnt := s.Count()
		x, dy, skip := vals(cnt), vals(cnt), vals(cnt)
		gamma, beta := vals(s.C), vals(s.C)
		for _, mode := range []string{"plain", "relu", "skip"} {
			task := func() bnTask[T] {
				b := bnTask[T]{y: make([]T, cnt), xhat: make([]T, cnt), mean: make([]T, s.C), inv: make([]T, s.C),
					runMean: vals(s.C), runVar: vals(s.C), x: x, gamma: gamma, beta: beta, s: s, momentum: 0.1, eps: 1e-5}
				b.relu = mode != "plain"
				if mode == "skip" {
					b.skip = skip
				}
				return b
			}
			rows, chans := task(), task()
			chans.runMean, chans.runVar = slices.Clone(rows.runMean), slices.Clone(rows.runVar)
			bnTrainRows(rows, 0, s.C)
			bnTrainChannels(chans, 0, s.C)
			for i, p := range [][2][]T{{rows.y, chans.y}, {rows.xhat, chans.xhat}, {rows.mean, chans.mean}, {rows.inv, chans.inv},
				{rows.runMean, chans.runMean}, {rows.runVar, chans.runVar}} {
				if !same(p[0], p[1]) {
					t.Fatalf("%+v %s: training output %d differs", s, mode, i)
				}
			}
			back := func(fwd bnTask[T]) bnTask[T] {
				b := bnTask[T]{y: make([]T, cnt), dGamma: make([]T, s.C), dBeta: make([]T, s.C), x: dy, xhat: fwd.xhat,
					mean: fwd.mean, inv: fwd.inv, gamma: gamma, beta: beta, s: s}
				switch mode {
				case "relu":
					b.relu, b.input = true, x
				case "skip":
					b.input, b.out, b.dSum = x, fwd.y, make([]T, cnt)
				}
				return b
			}
			br, bc := back(rows), back(chans)
			bnBackwardRows(br, 0, s.C)
			bnBackwardChannels(bc, 0, s.C)
			for i, p := range [][2][]T{{br.y, bc.y}, {br.dGamma, bc.dGamma}, {br.dBeta, bc.dBeta}, {br.dSum, bc.dSum}} {
				if !same(p[0], p[1]) {
					t.Fatalf("%+v %s: backward output %d differs", s, mode, i)
				}
			}
		}
	}
}
