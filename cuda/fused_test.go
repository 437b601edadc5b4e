//go:build cuda

package cuda_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"iterbin/backend"
	"iterbin/cuda"
)

// TestFusedOpsEqualTheirPairs checks the GPU's fused ops (backend.Fused
// and backend.FusedResidual) against the same GPU running the op
// sequences they replace: batch norm then ReLU, forward and backward
// (xhat and the ReLU mask recomputed from x), Add then ReLU, and a
// residual block's end, batch norm then the skip added then ReLU, and its
// backward pass (ReLU's, then batch norm's from the gradient of the sum),
// on NCHW inputs and on inputs stored channels-last (the NHWC kernels).
// Both run the same arithmetic in the same order, so they must agree bit
// for bit.
func TestFusedOpsEqualTheirPairs(t *testing.T) {
	gpu, err := cuda.New(0, cuda.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	fused, ok := gpu.(backend.FusedResidual)
	if !ok {
		t.Fatalf("%s does not implement backend.FusedResidual", gpu.Name())
	}
	for _, tc := range []struct {
		s    backend.BNShape
		nhwc bool
	}{{backend.BNShape{N: 2, C: 3, Spatial: 1}, false}, {backend.BNShape{N: 100, C: 300, Spatial: 1}, false}, {backend.BNShape{N: 7, C: 5, Spatial: 49}, false},
		{backend.BNShape{N: 64, C: 5, Spatial: 300}, false}, {backend.BNShape{N: 128, C: 16, Spatial: 1024}, false}, {backend.BNShape{N: 32, C: 64, Spatial: 3136}, false},
		{backend.BNShape{N: 7, C: 5, Spatial: 49}, true}, {backend.BNShape{N: 128, C: 16, Spatial: 1024}, true}, {backend.BNShape{N: 32, C: 64, Spatial: 3136}, true},
		{backend.BNShape{N: 4, C: 40, Spatial: 49}, true}} {
		s := tc.s
		// No subtests: ops run on the goroutine that made the backend,
		// whose OS thread holds its context.
		func() {
			rng := rand.New(rand.NewPCG(11, uint64(s.Count())))
			cnt, ch := s.Count(), s.C
			upload := func(n int, f func() float32) backend.Tensor {
				v := make([]float32, n)
				for i := range v {
					v[i] = f()
				}
				d := gpu.Alloc(n)
				gpu.Upload(d, v)
				return d
			}
			normal := func() float32 { return float32(rng.NormFloat64()) }
			x := upload(cnt, func() float32 { return 3 + 2*normal() })
			dy := upload(cnt, normal)
			skip := upload(cnt, normal)
			if tc.nhwc {
				for _, d := range []backend.Tensor{x, dy, skip} {
					cuda.ToChannelsLast(gpu, d, s.N, s.C, s.Spatial)
				}
			}
			gamma := upload(ch, func() float32 { return 1 + 0.5*normal() })
			beta := upload(ch, normal)
			alloc := func(n int, v float32) backend.Tensor {
				d := gpu.Alloc(n)
				gpu.Fill(d, v, n)
				return d
			}
			// The pairs.
			y, xhat, relu, dRelu, dx := alloc(cnt, 0), alloc(cnt, 0), alloc(cnt, 0), alloc(cnt, 0), alloc(cnt, 0)
			mean, inv, rm, rv, dg, db := alloc(ch, 0), alloc(ch, 0), alloc(ch, 0), alloc(ch, 1), alloc(ch, 0), alloc(ch, 0)
			gpu.BatchNormTrain(y, xhat, mean, inv, rm, rv, x, gamma, beta, s, 0.1, 1e-5)
			gpu.ReLUForward(relu, y, cnt)
			gpu.ReLUBackward(dRelu, dy, relu, cnt)
			gpu.BatchNormBackward(dx, dg, db, dRelu, xhat, inv, gamma, s)
			// The fused ops.
			fy, fdx := alloc(cnt, -7), alloc(cnt, -7)
			fmean, finv, frm, frv, fdg, fdb := alloc(ch, -7), alloc(ch, -7), alloc(ch, 0), alloc(ch, 1), alloc(ch, -7), alloc(ch, -7)
			fused.BatchNormReLUTrain(fy, fmean, finv, frm, frv, x, gamma, beta, s, 0.1, 1e-5)
			fused.BatchNormReLUBackward(fdx, fdg, fdb, dy, x, fmean, finv, gamma, beta, s)
			// Add then ReLU, on the batch-norm outputs.
			sum, sumRelu, fsum := alloc(cnt, 0), alloc(cnt, 0), alloc(cnt, -7)
			gpu.Add(sum, y, dy, cnt)
			gpu.ReLUForward(sumRelu, sum, cnt)
			fused.AddReLU(fsum, y, dy, cnt)
			// A residual block's end: the sequence on the batch-norm
			// outputs above, then the fused op on x.
			ry, rdSum, rdx, rdg, rdb := alloc(cnt, 0), alloc(cnt, 0), alloc(cnt, 0), alloc(ch, 0), alloc(ch, 0)
			gpu.(backend.Fused).AddReLU(ry, y, skip, cnt)
			gpu.ReLUBackward(rdSum, dy, ry, cnt)
			gpu.BatchNormBackward(rdx, rdg, rdb, rdSum, xhat, inv, gamma, s)
			fry, frdSum, frdx := alloc(cnt, -7), alloc(cnt, -7), alloc(cnt, -7)
			frmean, frinv, frrm, frrv, frdg, frdb := alloc(ch, -7), alloc(ch, -7), alloc(ch, 0), alloc(ch, 1), alloc(ch, -7), alloc(ch, -7)
			fused.BatchNormAddReLUTrain(fry, frmean, frinv, frrm, frrv, x, skip, gamma, beta, s, 0.1, 1e-5)
			fused.BatchNormAddReLUBackward(frdx, frdg, frdb, frdSum, dy, fry, x, frmean, frinv, gamma, s)
			for _, pair := range []struct {
				name      string
				want, got backend.Tensor
				n         int
			}{{"y", relu, fy, cnt}, {"mean", mean, fmean, ch}, {"invStd", inv, finv, ch}, {"runMean", rm, frm, ch}, {"runVar", rv, frv, ch},
				{"dx", dx, fdx, cnt}, {"dGamma", dg, fdg, ch}, {"dBeta", db, fdb, ch}, {"AddReLU", sumRelu, fsum, cnt},
				{"residual y", ry, fry, cnt}, {"residual mean", mean, frmean, ch}, {"residual invStd", inv, frinv, ch},
				{"residual runMean", rm, frrm, ch}, {"residual runVar", rv, frrv, ch}, {"residual dSum", rdSum, frdSum, cnt},
				{"residual dx", rdx, frdx, cnt}, {"residual dGamma", rdg, frdg, ch}, {"residual dBeta", rdb, frdb, ch}} {
				want, got := make([]float32, pair.n), make([]float32, pair.n)
				gpu.Download(want, pair.want)
				gpu.Download(got, pair.got)
				if err := gpu.Sync(); err != nil {
					t.Fatalf("%+v (NHWC %v): %v", s, tc.nhwc, err)
				}
				for i := range want {
					if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
						t.Errorf("%+v (NHWC %v): %s[%d]: fused %v, pair %v", s, tc.nhwc, pair.name, i, got[i], want[i])
						break
					}
				}
			}
			for _, d := range []backend.Tensor{x, dy, gamma, beta, y, xhat, relu, dRelu, dx, mean, inv, rm, rv, dg, db,
				fy, fdx, fmean, finv, frm, frv, fdg, fdb, sum, sumRelu, fsum, skip, ry, rdSum, rdx, rdg, rdb,
				fry, frdSum, frdx, frmean, frinv, frrm, frrv, frdg, frdb} {
				gpu.Free(d)
			}
		}()
	}
}
