package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"iterbin/backend"
)

// The float32 GEMM against a float64 reference, on shapes that cross every
// blocking boundary (mr, nr, kc, mc, nc), with either micro-kernel, and
// bit-identical whatever the number of workers.
func TestSgemmBlockingKernelsAndWorkers(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	shapes := [][3]int{{1, 1, 1}, {7, 17, 3}, {6, 16, 256}, {13, 33, 257}, {121, 40, 600}, {5, 2100, 300}, {300, 784, 100}}
	for _, d := range shapes {
		m, n, k := d[0], d[1], d[2]
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			a, bv, c0 := randVals(rng, m*k), randVals(rng, k*n), randVals(rng, m*n)
			ref := make([]float64, m*n)
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					var s float64
					for p := 0; p < k; p++ {
						av, bw := a[i*k+p], bv[p*n+j]
						if tr[0] {
							av = a[p*m+i]
						}
						if tr[1] {
							bw = bv[j*k+p]
						}
						s += float64(av) * float64(bw)
					}
					ref[i*n+j] = s - 0.5*float64(c0[i*n+j])
				}
			}
			var first []float32
			for _, cfg := range []struct {
				workers int
				simd    bool
			}{{1, true}, {2, true}, {3, true}, {2, false}} {
				b := NewWithOptions(cfg.workers, cfg.simd)
				at, bt, ct := upload(b, a), upload(b, bv), upload(b, c0)
				b.Gemm(tr[0], tr[1], m, n, k, 1, at, bt, -0.5, ct)
				got := download(b, ct)
				b.Close()
				for i := range got {
					if d := math.Abs(float64(got[i]) - ref[i]); d > 1e-4*math.Sqrt(float64(k))*(1+math.Abs(ref[i])) {
						t.Fatalf("%v trans %v workers %d simd %v: C[%d] = %v, want %v", d, tr, cfg.workers, cfg.simd, i, got[i], ref[i])
					}
				}
				if !cfg.simd {
					continue
				}
				if first == nil {
					first = got
				} else if !equal(first, got) {
					t.Fatalf("%v trans %v: %d workers gave other bits than 1", d, tr, cfg.workers)
				}
			}
		}
	}
}

// Float32 convolutions (packed GEMM, parallel) against the float64 backend,
// and bit-identical for any number of workers.
func TestConvFloat32MatchesFloat64AndIsThreadIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, s := range []backend.ConvShape{
		{N: 3, C: 3, H: 9, W: 7, OC: 5, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 4, C: 16, H: 8, W: 8, OC: 32, KH: 3, KW: 3, Stride: 2, Pad: 1},
		{N: 2, C: 8, H: 5, W: 5, OC: 7, KH: 1, KW: 1, Stride: 1, Pad: 0},
		// Stride-1 convolutions without columns (implicit GEMM):
		{N: 2, C: 4, H: 6, W: 11, OC: 9, KH: 3, KW: 3, Stride: 1, Pad: 0},
		{N: 2, C: 3, H: 7, W: 5, OC: 4, KH: 5, KW: 5, Stride: 1, Pad: 2},
		{N: 1, C: 2, H: 5, W: 6, OC: 13, KH: 3, KW: 3, Stride: 1, Pad: 2},
		{N: 2, C: 70, H: 4, W: 4, OC: 6, KH: 3, KW: 3, Stride: 1, Pad: 1}, // k = 630 > kc
		// Filter gradients over several sample groups, and over several
		// chunks of one sample:
		{N: 70, C: 2, H: 4, W: 4, OC: 3, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 2, C: 2, H: 33, W: 31, OC: 5, KH: 3, KW: 3, Stride: 1, Pad: 1},
		// Output rows a multiple of 16 wide: tiles written into y in place.
		{N: 2, C: 3, H: 5, W: 32, OC: 8, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 2, C: 30, H: 3, W: 18, OC: 13, KH: 3, KW: 3, Stride: 1, Pad: 0}, // k = 270 > kc
		// Strided forward passes on phase splits: tiles of 16-wide rows, of
		// two 8-wide rows, 1×1, stride 3:
		{N: 2, C: 4, H: 32, W: 31, OC: 8, KH: 3, KW: 3, Stride: 2, Pad: 1},
		{N: 2, C: 3, H: 16, W: 16, OC: 9, KH: 3, KW: 3, Stride: 2, Pad: 1},
		{N: 2, C: 8, H: 8, W: 9, OC: 16, KH: 1, KW: 1, Stride: 2, Pad: 0},
		{N: 2, C: 5, H: 11, W: 10, OC: 7, KH: 3, KW: 3, Stride: 3, Pad: 2},
		// Stride 2: ResNet-20's, padding even and odd, sizes odd, a
		// 1-wide input, a kernel wider than the padded input's phases:
		{N: 2, C: 16, H: 32, W: 32, OC: 32, KH: 3, KW: 3, Stride: 2, Pad: 1},
		{N: 2, C: 32, H: 16, W: 16, OC: 64, KH: 3, KW: 3, Stride: 2, Pad: 1},
		{N: 2, C: 3, H: 9, W: 13, OC: 5, KH: 3, KW: 3, Stride: 2, Pad: 0},
		{N: 2, C: 4, H: 10, W: 17, OC: 8, KH: 5, KW: 5, Stride: 2, Pad: 2},
		{N: 2, C: 2, H: 7, W: 1, OC: 3, KH: 3, KW: 3, Stride: 2, Pad: 1},
		{N: 2, C: 2, H: 1, W: 6, OC: 3, KH: 1, KW: 1, Stride: 2, Pad: 0},
		{N: 2, C: 3, H: 5, W: 5, OC: 4, KH: 4, KW: 4, Stride: 2, Pad: 3},
		// Kernels wider than the input with padding: some taps reach no
		// column at all.
		{N: 1, C: 1, H: 1, W: 1, OC: 1, KH: 1, KW: 5, Stride: 1, Pad: 2},
		{N: 1, C: 1, H: 3, W: 1, OC: 1, KH: 5, KW: 5, Stride: 1, Pad: 2},
		// Channels-last filter gradients (AVX-512), strided and not square too:
		{N: 3, C: 16, H: 9, W: 12, OC: 8, KH: 3, KW: 3, Stride: 2, Pad: 1},
		{N: 2, C: 16, H: 7, W: 6, OC: 32, KH: 1, KW: 3, Stride: 3, Pad: 0},
		{N: 2, C: 32, H: 10, W: 10, OC: 8, KH: 7, KW: 7, Stride: 2, Pad: 3},
		{N: 3, C: 16, H: 5, W: 8, OC: 32, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 2, C: 8, H: 4, W: 10, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 0},
		{N: 2, C: 16, H: 3, W: 16, OC: 16, KH: 5, KW: 5, Stride: 1, Pad: 2},
		{N: 2, C: 32, H: 2, W: 8, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 2},
		// Outputs 8 wide in tiles of two rows (AVX-512), and 8 wide with an
		// odd number of rows (padded tiles):
		{N: 2, C: 5, H: 6, W: 8, OC: 11, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 2, C: 30, H: 4, W: 8, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1}, // k = 270 > kc
		{N: 2, C: 4, H: 5, W: 8, OC: 8, KH: 3, KW: 3, Stride: 1, Pad: 1},
		// Winograd F(2×2, 3×3) (AVX-512): ResNet-20's layers, channels
		// changing, tiles not filling blocks of 8, one tile, several
		// chunks of tile rows, rows narrower than 16:
		{N: 3, C: 16, H: 32, W: 32, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 2, C: 32, H: 16, W: 16, OC: 64, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 2, C: 64, H: 8, W: 8, OC: 32, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 2, C: 16, H: 6, W: 10, OC: 48, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 2, C: 16, H: 2, W: 2, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1}, // filter gradient not on Winograd
		{N: 2, C: 16, H: 4, W: 4, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 1, C: 16, H: 64, W: 40, OC: 32, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 2, C: 48, H: 4, W: 12, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1},
	} {
		in, out, wn := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW(), s.OC*s.C*s.KH*s.KW
		x, w, dy := randVals(rng, in), randVals(rng, wn), randVals(rng, out)
		ref := NewFloat64()
		run64 := func(op func(b *Backend[float64], o, p, q backend.Tensor), n int, p, q []float32) []float64 {
			o := ref.Alloc(n)
			op(ref, o, up64(ref, p), up64(ref, q))
			v := make([]float64, n)
			ref.Download64(v, o)
			return v
		}
		ops := func(x, w, dy []float32) [][]float64 {
			return [][]float64{
				run64(func(b *Backend[float64], o, p, q backend.Tensor) { b.Conv2DForward(o, p, q, s) }, out, x, w),
				run64(func(b *Backend[float64], o, p, q backend.Tensor) { b.Conv2DBackwardData(o, p, q, s) }, in, dy, w),
				run64(func(b *Backend[float64], o, p, q backend.Tensor) { b.Conv2DBackwardFilter(o, p, q, s) }, wn, dy, x),
			}
		}
		want, abs := ops(x, w, dy), ops(absVals(x), absVals(w), absVals(dy))
		// The first results of each kernel set (simd, avx512): other kernels
		// round differently (no FMA, other lanes), the same kernels on any
		// number of workers give the same bits.
		first := map[[2]bool][][]float32{}
		for _, cfg := range []struct {
			workers      int
			simd, avx512 bool
		}{{1, true, true}, {2, true, true}, {3, true, true}, {2, false, false}, {1, true, false}, {2, true, false}, {3, true, false}} {
			workers := cfg.workers
			b := newBackend[float32](workers, cfg.simd, cfg.avx512)
			y, dx, dw := b.Alloc(out), b.Alloc(in), b.Alloc(wn)
			b.Conv2DForward(y, upload(b, x), upload(b, w), s)
			b.Conv2DBackwardData(dx, upload(b, dy), upload(b, w), s)
			b.Conv2DBackwardFilter(dw, upload(b, dy), upload(b, x), s)
			// The input gradient added to what dx holds gives the same bits
			// as the gradient then Add.
			dxAdd, sum := upload(b, x), b.Alloc(in)
			b.Conv2DBackwardDataAdd(dxAdd, upload(b, dy), upload(b, w), s)
			b.Add(sum, dx, upload(b, x), in)
			if err := b.Err(); err != nil {
				t.Fatal(err)
			}
			got := [][]float32{download(b, y), download(b, dx), download(b, dw)}
			if !equal(download(b, dxAdd), download(b, sum)) {
				t.Fatalf("%+v workers %d: Conv2DBackwardDataAdd differs from Conv2DBackwardData then Add", s, workers)
			}
			b.Close()
			for op := range got {
				for i, v := range got[op] {
					if !convWithin(v, want[op][i], abs[op][i]) {
						t.Fatalf("%+v op %d workers %d: [%d] = %v, float64 gives %v", s, op, workers, i, v, want[op][i])
					}
				}
			}
			set := [2]bool{cfg.simd, cfg.avx512}
			if first[set] == nil {
				first[set] = got
			}
			for op := range got {
				if !equal(first[set][op], got[op]) {
					t.Fatalf("%+v op %d, kernels %v: %d workers gave other bits than 1", s, op, set, workers)
				}
			}
		}
	}
}

// convWithin says whether a float32 convolution's got is within rounding
// of the float64 want: 1e-4 relative, or 1e-6 of abs, the sum of the
// absolute values of want's terms (the same op on absolute inputs). A sum
// that cancels keeps little relative accuracy: the Winograd filter
// gradient, whose sums run over products of transformed values, is more
// accurate than the direct one on the whole (a smaller RMS error against
// float64), yet misses a relative bound on the odd small element.
func convWithin(got float32, want, abs float64) bool {
	err := math.Abs(float64(got) - want)
	return err <= 1e-4*(1+math.Abs(want)) || err <= 1e-6*abs
}

func absVals(v []float32) []float32 {
	a := make([]float32, len(v))
	for i, x := range v {
		a[i] = float32(math.Abs(float64(x)))
	}
	return a
}

func up64(b *Backend[float64], v []float32) backend.Tensor {
	t := b.Alloc(len(v))
	b.Upload(t, v)
	return t
}

// BenchmarkSgemm reports GFLOP/s for the GEMM shapes of the paper's models
// (Dense forward/backward at batch 100, convolutions as im2col GEMMs).
func BenchmarkSgemm(b *testing.B) {
	for _, s := range []struct {
		name    string
		m, n, k int
		ta, tb  bool
	}{
		{"mlp-fc1-fwd", 100, 300, 784, false, true},
		{"mlp-fc1-dW", 300, 784, 100, true, false},
		{"mlp784-fc2-fwd", 100, 784, 784, false, true},
		{"vgg5-conv2-fwd", 64, 1024, 576, false, false},
		{"resnet20-stage3-fwd", 64, 64, 576, false, false},
		{"square-1024", 1024, 1024, 1024, false, false},
	} {
		b.Run(fmt.Sprintf("%s/%dx%dx%d", s.name, s.m, s.n, s.k), func(b *testing.B) {
			be := New()
			defer be.Close()
			rng := rand.New(rand.NewPCG(1, 1))
			a, bb, c := upload(be, randVals(rng, s.m*s.k)), upload(be, randVals(rng, s.k*s.n)), be.Alloc(s.m*s.n)
			be.Gemm(s.ta, s.tb, s.m, s.n, s.k, 1, a, bb, 0, c)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				be.Gemm(s.ta, s.tb, s.m, s.n, s.k, 1, a, bb, 0, c)
			}
			b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkMicroKernel is the single-core ceiling: the active micro-kernel
// on packed panels that stay in L1, no packing, no memory traffic.
func BenchmarkMicroKernel(b *testing.B) {
	be := New()
	defer be.Close()
	const k = 256
	rng := rand.New(rand.NewPCG(1, 1))
	a, bp, out := randVals(rng, k*mr), randVals(rng, k*nr), make([]float32, mr*nr)
	b.Run(be.kernelName, func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			be.kernel(k, a, bp, out, nr, false)
		}
		b.ReportMetric(2*mr*nr*k*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}

// The assembly kernels against their portable references: stores and adds
// into rows ldc apart, untouched elements between the rows, and lane-wise
// filter-gradient sums; the AVX2 convolution kernels and, where the
// processor has AVX-512, those too. FMA rounding differs from the portable
// loops' by a few ulps.
func TestSIMDKernelsMatchPortable(t *testing.T) {
	if k, _ := simdKernel(); k == nil {
		t.Skip("no SIMD kernels on this processor: only the portable ones run")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const k, ldc = 37, 21
	a, bp := randVals(rng, k*maxPanel), randVals(rng, k*nr+64)
	offs := make([]int64, k)
	for p := range offs {
		offs[p] = int64(p + p/3) // rows overlap, like shifted image rows
	}
	close := func(what string, got, want []float32) {
		t.Helper()
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("%s: [%d] = %v, portable gives %v", what, i, got[i], want[i])
			}
		}
	}
	for _, avx512 := range []bool{false, true} {
		be := newBackend[float32](1, true, avx512)
		name := be.convName
		for _, add := range []bool{false, true} {
			c0 := randVals(rng, maxPanel*ldc)
			got, want := append([]float32(nil), c0...), append([]float32(nil), c0...)
			if !avx512 {
				be.kernel(k, a, bp, got, ldc, add)
				kernelGo(k, a, bp, want, ldc, add)
				close(fmt.Sprintf("GEMM kernel add=%v", add), got, want)
				got, want = append([]float32(nil), c0...), append([]float32(nil), c0...)
			}
			rows := be.implicit.rows
			be.implicit.run(k, a[:k*rows], bp, offs, got, ldc, add)
			kernelOffsetsRowsGo(rows, k, a[:k*rows], bp, offs, want, ldc, add)
			close(fmt.Sprintf("%s implicit kernel add=%v", name, add), got, want)
			if run2 := be.implicit.twoRows; run2 != nil {
				const gap = 13
				got, want = append([]float32(nil), c0...), append([]float32(nil), c0...)
				run2(k, a[:k*rows], bp, offs, gap, got, ldc, add)
				kernelOffsets2RowsGo(rows, k, a[:k*rows], bp, offs, gap, want, ldc, add)
				close(fmt.Sprintf("%s two-row implicit kernel add=%v", name, add), got, want)
			}
		}
		d := be.dot
		const n, ldy = 9, 16*9 + 5
		dy, x := randVals(rng, d.rows*ldy), randVals(rng, n*d.lanes+40)
		doffs := []int64{0, 1, 2, 7, 33, 40}
		acc0 := randVals(rng, d.rows*d.cols*d.lanes)
		got, want := append([]float32(nil), acc0...), append([]float32(nil), acc0...)
		d.run(n, dy, ldy, x, doffs, got)
		dotGo(d.rows, d.cols, d.lanes, n, dy, ldy, x, doffs, want)
		close(name+" filter-gradient kernel", got, want)
		if dk := be.direct; dk != nil {
			const rows, cols, dyRow, dyPlane, xRow, xCol = 3, 5, 9, 40, 90, 17
			fdy, fx := randVals(rng, (directRows-1)*dyPlane+(rows-1)*dyRow+cols), randVals(rng, (rows-1)*xRow+(cols-1)*xCol+directCols)
			acc0 := randVals(rng, directRows*directCols)
			got, want := append([]float32(nil), acc0...), append([]float32(nil), acc0...)
			dk.filter(rows, cols, fdy, dyRow, dyPlane, fx, xRow, xCol, got)
			filterGo(rows, cols, fdy, dyRow, dyPlane, fx, xRow, xCol, want)
			close("direct filter-gradient kernel", got, want)
			checkTransposes(t, rng, "AVX-512", dk.transpose)
		}
		if wk := be.winograd; wk != nil {
			checkTransposes(t, rng, wk.name+" Winograd", wk.transpose)
			// The transforms add and subtract in the references' order:
			// the same bits. Untouched elements between stay as they were.
			const n, xRow, xCol, vStep, vPlane = 5, 300, 20, 24, 130
			x := randVals(rng, 2*(n-1)*xCol+3*xRow+3*xCol+16)
			v0 := randVals(rng, 15*vPlane+(n-1)*vStep+16)
			got, want := append([]float32(nil), v0...), append([]float32(nil), v0...)
			wk.input(n, x, xRow, xCol, got, vStep, vPlane)
			winogradInputGo(wk.lanes, n, x, xRow, xCol, want, vStep, vPlane)
			if !equal(got, want) {
				t.Fatal(wk.name + ": " + "Winograd input transform differs from winogradInputGo")
			}
			const yRow, yCol = 200, 17
			y0 := randVals(rng, 2*(n-1)*yCol+yRow+yCol+16)
			got, want = append([]float32(nil), y0...), append([]float32(nil), y0...)
			wk.output(n, v0, vStep, vPlane, got, yRow, yCol)
			winogradOutputGo(wk.lanes, n, v0, vStep, vPlane, want, yRow, yCol)
			if !equal(got, want) {
				t.Fatal(wk.name + ": " + "Winograd output transform differs from winogradOutputGo")
			}
			const blocks, kk, lda, ldb, ldc = 3, 37, 41, 19, 21
			ga, gb := randVals(rng, (8*blocks-1)*lda+kk), randVals(rng, (kk-1)*ldb+16)
			c0 := randVals(rng, (8*blocks-1)*ldc+16)
			got, want = append([]float32(nil), c0...), append([]float32(nil), c0...)
			wk.gemm(blocks, kk, ga, lda, gb, ldb, got, ldc)
			winogradGemmGo(wk.lanes, blocks, kk, ga, lda, gb, ldb, want, ldc)
			close(wk.name+" Winograd matrix-product kernel", got, want)
			for i := range c0 {
				if i%ldc >= wk.lanes && got[i] != c0[i] {
					t.Fatalf("%s Winograd matrix-product kernel wrote [%d] between rows", wk.name, i)
				}
			}
			const dyRow, dyCol = 150, 18
			dyv := randVals(rng, 2*(n-1)*dyCol+dyRow+dyCol+16)
			got, want = append([]float32(nil), v0...), append([]float32(nil), v0...)
			wk.grad(n, dyv, dyRow, dyCol, got, vStep, vPlane)
			winogradGradGo(wk.lanes, n, dyv, dyRow, dyCol, want, vStep, vPlane)
			if !equal(got, want) {
				t.Fatal(wk.name + ": " + "Winograd output-gradient transform differs from winogradGradGo")
			}
			const fblocks, fldb, fldc = 2, 35, 37
			fa, fb := randVals(rng, (kk-1)*lda+8), randVals(rng, (kk-1)*fldb+16*fblocks)
			fc0 := randVals(rng, 7*fldc+16*fblocks+5)
			got, want = append([]float32(nil), fc0...), append([]float32(nil), fc0...)
			wk.filterGemm(kk, fblocks, fa, lda, fb, fldb, got, fldc)
			winogradFilterGemmGo(wk.lanes, kk, fblocks, fa, lda, fb, fldb, want, fldc)
			close(wk.name+" Winograd filter-gradient kernel", got, want)
		}
		be.Close()
	}
}

// checkTransposes requires a block-transpose kernel to give transposeGo's
// bits for one and for three 16×16 blocks, leaving the elements between
// dst's rows as they were.
func checkTransposes(t *testing.T, rng *rand.Rand, name string, transpose func(dst []float32, ldd int, src []float32, lds int, blocks int)) {
	t.Helper()
	const ldd, lds = 19, 53
	for _, blocks := range []int{1, 3} {
		src := randVals(rng, 15*lds+16*blocks)
		dst0 := randVals(rng, (16*blocks-1)*ldd+16)
		got, want := append([]float32(nil), dst0...), append([]float32(nil), dst0...)
		transpose(got, ldd, src, lds, blocks)
		transposeGo(want, ldd, src, lds, blocks)
		if !equal(got, want) {
			t.Fatalf("%s: %d 16×16 transposes: %v, want %v", name, blocks, got, want)
		}
	}
}

// BenchmarkConv reports GFLOP/s of the three convolution ops on the
// layer shapes of VGG-5 and ResNet-20 (16 samples, one worker per
// GOMAXPROCS), counting a direct convolution's multiply-adds whatever the
// path: with the AVX-512 kernels and Winograd, with the AVX-512 kernels
// only, and with AVX2 only.
func BenchmarkConv(b *testing.B) {
	for _, k := range []struct {
		name             string
		avx512, winograd bool
	}{{"avx512-winograd", true, true}, {"avx512-implicit", true, false}, {"avx2-winograd", false, true}, {"avx2-implicit", false, false}} {
		be := newBackend[float32](runtime.GOMAXPROCS(0), true, k.avx512)
		if be.winograd == nil && k.winograd || be.direct == nil && k.avx512 {
			continue // the processor lacks them
		}
		if !k.winograd {
			be.winograd = nil
		}
		b.Run(k.name, func(b *testing.B) { benchmarkConv(b, be) })
		be.Close()
	}
}

func benchmarkConv(b *testing.B, be *Backend[float32]) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, l := range []struct {
		name string
		s    backend.ConvShape
	}{
		{"vgg5-conv2-64x32x32", backend.ConvShape{N: 16, C: 64, H: 32, W: 32, OC: 64, KH: 3, KW: 3, Stride: 1, Pad: 1}},
		{"resnet20-16x32x32", backend.ConvShape{N: 16, C: 16, H: 32, W: 32, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1}},
		{"resnet20-32x16x16", backend.ConvShape{N: 16, C: 32, H: 16, W: 16, OC: 32, KH: 3, KW: 3, Stride: 1, Pad: 1}},
		{"resnet20-64x8x8", backend.ConvShape{N: 16, C: 64, H: 8, W: 8, OC: 64, KH: 3, KW: 3, Stride: 1, Pad: 1}},
		{"resnet20-down-16to32", backend.ConvShape{N: 16, C: 16, H: 32, W: 32, OC: 32, KH: 3, KW: 3, Stride: 2, Pad: 1}},
	} {
		s := l.s
		in, out, wn := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW(), s.OC*s.C*s.KH*s.KW
		x, w, dy := upload(be, randVals(rng, in)), upload(be, randVals(rng, wn)), upload(be, randVals(rng, out))
		y, dx, dw := be.Alloc(out), be.Alloc(in), be.Alloc(wn)
		flop := 2 * float64(s.N*s.OutH()*s.OutW()*s.OC*s.C*s.KH*s.KW)
		for _, op := range []struct {
			name string
			run  func()
		}{
			{"forward", func() { be.Conv2DForward(y, x, w, s) }},
			{"backward-data", func() { be.Conv2DBackwardData(dx, dy, w, s) }},
			{"backward-filter", func() { be.Conv2DBackwardFilter(dw, dy, x, s) }},
		} {
			b.Run(l.name+"/"+op.name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					op.run()
				}
				b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// Random strided and stride-1 shapes through every float32 convolution
// path, against the float64 backend: the phase splits and the implicit
// tiles must hold for shapes no table above lists, with each kernel set.
func TestConvRandomShapesMatchFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	ref := NewFloat64()
	defer ref.Close()
	sets := []*Backend[float32]{newBackend[float32](2, true, true), newBackend[float32](2, true, false), newBackend[float32](2, false, false)}
	for _, be := range sets {
		defer be.Close()
	}
	for trial := 0; trial < 300; trial++ {
		be := sets[trial%len(sets)]
		k := 1 + rng.IntN(5)
		s := backend.ConvShape{N: 1 + rng.IntN(3), C: 1 + rng.IntN(20), H: k + rng.IntN(12), W: k + rng.IntN(12),
			OC: 1 + rng.IntN(20), KH: k, KW: k, Stride: 1 + rng.IntN(3), Pad: rng.IntN(k)}
		if rng.IntN(3) == 0 {
			s.C, s.OC = 16*(1+rng.IntN(2)), 8*(1+rng.IntN(3)) // the channels-last filter gradient
		}
		in, out, wn := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW(), s.OC*s.C*s.KH*s.KW
		x, w, dy := randVals(rng, in), randVals(rng, wn), randVals(rng, out)
		run64 := func(op func(o, p, q backend.Tensor), n int, p, q []float32) []float64 {
			o := ref.Alloc(n)
			op(o, up64(ref, p), up64(ref, q))
			v := make([]float64, n)
			ref.Download64(v, o)
			return v
		}
		ops := func(x, w, dy []float32) [][]float64 {
			return [][]float64{
				run64(func(o, p, q backend.Tensor) { ref.Conv2DForward(o, p, q, s) }, out, x, w),
				run64(func(o, p, q backend.Tensor) { ref.Conv2DBackwardData(o, p, q, s) }, in, dy, w),
				run64(func(o, p, q backend.Tensor) { ref.Conv2DBackwardFilter(o, p, q, s) }, wn, dy, x),
			}
		}
		want, abs := ops(x, w, dy), ops(absVals(x), absVals(w), absVals(dy))
		y, dx, dw := be.Alloc(out), be.Alloc(in), be.Alloc(wn)
		be.Conv2DForward(y, upload(be, x), upload(be, w), s)
		be.Conv2DBackwardData(dx, upload(be, dy), upload(be, w), s)
		be.Conv2DBackwardFilter(dw, upload(be, dy), upload(be, x), s)
		if err := be.Err(); err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		for op, got := range [][]float32{download(be, y), download(be, dx), download(be, dw)} {
			for i, v := range got[:len(want[op])] {
				if !convWithin(v, want[op][i], abs[op][i]) {
					t.Fatalf("%+v op %d: [%d] = %v, float64 gives %v", s, op, i, v, want[op][i])
				}
			}
		}
	}
}

// The Winograd path takes exactly the layers it is meant for: 3×3,
// stride 1, padding 1, even sizes, channels in multiples of 16 (filter
// gradients from 4×4 images up), with AVX-512 or else AVX2 kernels.
func TestWinogradTakesTheLayersItShould(t *testing.T) {
	be := newBackend[float32](1, true, true)
	defer be.Close()
	if be.winograd == nil {
		t.Skip("no AVX-512: this test needs both kernel sets")
	}
	conv := func(n, c, h, w, oc, k, stride, pad int) backend.ConvShape {
		return backend.ConvShape{N: n, C: c, H: h, W: w, OC: oc, KH: k, KW: k, Stride: stride, Pad: pad}
	}
	for _, l := range []struct {
		s           backend.ConvShape
		fwd, filter bool
	}{
		{conv(128, 16, 32, 32, 16, 3, 1, 1), true, true}, // ResNet-20's stages
		{conv(128, 32, 16, 16, 32, 3, 1, 1), true, true},
		{conv(128, 64, 8, 8, 64, 3, 1, 1), true, true},
		{conv(100, 64, 32, 32, 128, 3, 1, 1), true, true}, // VGG-5's
		{conv(2, 16, 2, 2, 16, 3, 1, 1), true, false},     // one tile
		{conv(128, 3, 32, 32, 16, 3, 1, 1), false, false}, // a first layer
		{conv(128, 16, 32, 32, 32, 3, 2, 1), false, false},
		{conv(128, 16, 31, 32, 16, 3, 1, 1), false, false},
		{conv(128, 16, 32, 32, 8, 3, 1, 1), false, false},
		{conv(128, 16, 32, 32, 16, 3, 1, 0), false, false},
		{conv(128, 16, 32, 32, 16, 5, 1, 1), false, false},
	} {
		if got := be.winogradOK(l.s); got != l.fwd {
			t.Errorf("%+v: Winograd forward and input gradient %v, want %v", l.s, got, l.fwd)
		}
		if got := be.winogradFilterOK(l.s); got != l.filter {
			t.Errorf("%+v: Winograd filter gradient %v, want %v", l.s, got, l.filter)
		}
	}
	if be.winograd.lanes != 16 {
		t.Errorf("AVX-512 Winograd kernels with %d lanes", be.winograd.lanes)
	}
	avx2 := newBackend[float32](1, true, false)
	defer avx2.Close()
	if avx2.winograd == nil || avx2.winograd.lanes != 8 {
		t.Error("no AVX2 Winograd kernels (8 lanes) where the AVX-512 ones run")
	}
}
