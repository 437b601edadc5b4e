//go:build cuda

// bf16 mixed precision (Options.Precision = "bf16") on both convolution
// paths. Like every test here these need an NVIDIA GPU (parity_test.go);
// the cuDNN-path ones skip, saying why, where cuDNN does not load.
//
// What bf16 promises, and so what is checked: the two operands of every
// GEMM and convolution are rounded to bf16 (nearest even), their products
// are exact (8 × 8 significant bits fit float32's 24) and are summed in
// fp32; GEMM outputs and im2col convolutions are float32, cuDNN's
// convolutions write bf16 (rounded to nearest even), widened to float32.

package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
	"iterbin/cuda"
	"iterbin/trainer"
)

// bf16Unit is u = 2⁻⁸, bf16's unit roundoff: it keeps 8 significant bits,
// so rounding to nearest moves a value by at most u of itself.
const bf16Unit = 1.0 / 256

// accTol bounds the fp32 summation error of a GEMM or convolution, on
// either side, relative to Σ|aᵢbᵢ|: naive summation of k terms is off by
// at most k·2⁻²⁴·Σ|aᵢbᵢ| (1e-3 covers k up to 16 000, beyond every case
// here), blocked and tensor-core summation by less.
const accTol = 1e-3

// roundBF16 is float32 → bf16 → float32 rounding to nearest, ties to even,
// for finite values: what f32_to_bf16 (__float2bfloat16_rn) computes.
func roundBF16(f float32) float32 {
	u := math.Float32bits(f)
	u += 0x7fff + (u>>16)&1
	return math.Float32frombits(u &^ 0xffff)
}

// halfFormat is a 16-bit format of mixed precision as the tests see it:
// the precision that uses it, its rounding of a float32 (nearest even)
// and its unit roundoff u, the most rounding moves a value by, relative
// to itself (for values in its normal range).
type halfFormat struct {
	precision string
	round     func(float32) float32
	unit      float64
}

// bf16Format is bf16: 8 significant bits, u = 2⁻⁸.
var bf16Format = halfFormat{precision: cuda.BF16, round: roundBF16, unit: bf16Unit}

// bf16Case is a GEMM or a convolution for the 16-bit parity tables. run is
// the op; its inputs 0 and 1 are the operands cuda rounds to bf16, any
// further input (a GEMM's C) stays float32. The op's output is
// alpha·Σ in0·in1 over k products, plus terms in the further inputs;
// bilinear computes Σ in0·in1 alone (alpha 1, beta 0), which on squared
// or absolute operands gives each output's error scale.
type bf16Case struct {
	opCase
	k        int
	alpha    float64
	bilinear func(b backend.Backend, in, out []backend.Tensor)
	conv     bool // cuDNN rounds the output of a convolution to bf16
	// shape and direction (0 forward, 1 backward data, 2 backward filter)
	// of a convolution, for its cuDNN plan.
	shape     backend.ConvShape
	direction int
}

func bf16GemmCases() []bf16Case {
	var cases []bf16Case
	for _, d := range [][3]int{{1, 1, 1}, {33, 17, 65}, {100, 300, 784}, {7, 1, 129}, {128, 256, 1152}} {
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			m, n, k, ta, tb := d[0], d[1], d[2], tr[0], tr[1]
			bilinear := func(b backend.Backend, in, out []backend.Tensor) { b.Gemm(ta, tb, m, n, k, 1, in[0], in[1], 0, out[0]) }
			cases = append(cases, bf16Case{k: k, alpha: 1, bilinear: bilinear, opCase: opCase{
				name:   fmt.Sprintf("Gemm %dx%dx%d tA=%v tB=%v", m, n, k, ta, tb),
				inputs: []int{m * k, k * n}, outputs: []int{m * n}, run: bilinear}})
		}
	}
	// alpha and beta reach cublasGemmEx as floats; C stays float32.
	m, n, k := 33, 17, 65
	cases = append(cases, bf16Case{k: k, alpha: 0.5, opCase: opCase{
		name:   fmt.Sprintf("Gemm %dx%dx%d alpha 0.5, beta -1", m, n, k),
		inputs: []int{m * k, k * n, m * n}, outputs: []int{m * n},
		run: func(b backend.Backend, in, out []backend.Tensor) {
			b.Copy(out[0], in[2], m*n)
			b.Gemm(false, true, m, n, k, 0.5, in[0], in[1], -1, out[0])
		}},
		bilinear: func(b backend.Backend, in, out []backend.Tensor) {
			b.Gemm(false, true, m, n, k, 1, in[0], in[1], 0, out[0])
		}})
	return cases
}

// bf16ConvCases are the three convolution ops over convShapes, inputs in
// convCases' order.
func bf16ConvCases() []bf16Case {
	var cases []bf16Case
	for i, c := range convCases(false) { // three directions per shape
		cases = append(cases, bf16Case{opCase: c, k: c.products, alpha: 1, bilinear: c.run, conv: true, shape: convShapes[i/3], direction: i % 3})
	}
	return cases
}

// cudnnMustRunBF16 returns which shapes cuDNN must run in bf16 on gpu
// rather than leave to im2col: where it certainly supports bf16
// convolutions (cuda.CudnnRunsBF16), those whose channel counts C and OC
// are multiples of 8, the alignment its bf16 tensor-core kernels want.
// Elsewhere, or for other shapes, falling back is allowed (and logged).
func cudnnMustRunBF16(t *testing.T, gpu backend.Backend) func(backend.ConvShape) bool {
	t.Helper()
	certain, why := cuda.CudnnRunsBF16(gpu)
	if !certain {
		t.Logf("bf16 convolutions may fall back to im2col here, none is required to run on cuDNN: %s", why)
	}
	return func(s backend.ConvShape) bool { return certain && s.C%8 == 0 && s.OC%8 == 0 }
}

// mapInputs applies f to the operands (inputs 0 and 1) of a case's inputs.
func mapInputs(in [][]float32, f func(float32) float32) [][]float32 {
	out := make([][]float32, len(in))
	for i, v := range in {
		out[i] = append([]float32(nil), v...)
		if i < 2 {
			for j := range out[i] {
				out[i][j] = f(out[i][j])
			}
		}
	}
	return out
}

func runOn(t *testing.T, b backend.Backend, c opCase, in [][]float32) []float32 {
	t.Helper()
	out, err := runCase(b, c, in)
	if err != nil {
		t.Fatalf("%s on %s: %v", c.name, b.Name(), err)
	}
	return out[0]
}

// checkHalf runs every case on a backend at format f's precision and
// checks each output against two CPU references, per output i:
//
//	(a) the CPU on the operands rounded to f (the same products, summed
//	    in another order): |got − ref| ≤ alpha·accTol·Σ|aᵢbᵢ|, plus, on the
//	    cuDNN path, u·|ref| for the 16-bit output. This is tight: it fails
//	    if the operands were not rounded, or rounded otherwise than to
//	    nearest even, wherever k is below a few hundred.
//	    (a) assumes cuDNN forms the products of the rounded operands and
//	    adds them in fp32 before its one 16-bit rounding. Its FFT and
//	    Winograd algorithms transform the operands first, so an op cuDNN
//	    ran with one of those is held to (b) alone, and the table names
//	    the algorithm. (At 16 bits the backend runs no nondeterministic
//	    algorithm, whose atomic adds could round at each add.)
//	(b) the CPU in fp32 on the operands as they are: rounding moves each
//	    product aᵢbᵢ by at most 2u|aᵢbᵢ|, by independent amounts of
//	    either sign with a standard deviation of at most u·√(2/3)·|aᵢbᵢ|,
//	    so the sum is off by about u·√(2/3)·√(Σaᵢ²bᵢ²) (≈ u·√k for unit
//	    normal data); six times u·√(Σaᵢ²bᵢ²) leaves over 7σ for the
//	    largest of thousands of outputs. Plus the accTol and cuDNN output
//	    terms of (a).
//
// Each output also gets 1e-5·(1+|ref|) for the float32 terms outside the
// product (a GEMM's beta·C).
func checkHalf(t *testing.T, gpu backend.Backend, f halfFormat, cudnnPath bool, cases []bf16Case) {
	t.Helper()
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-80s %6s %14s %14s %14s  %s\n", "op", "k", "(a) err/bound", "(b) err/bound", "(b) err/(u·S)", "")
	failed := 0
	for _, c := range cases {
		hostIn := caseInputs(c.opCase)
		ref := cpu.New()
		want := runOn(t, ref, c.opCase, hostIn)
		wantR := runOn(t, ref, c.opCase, mapInputs(hostIn, f.round))
		bil := opCase{name: c.name + " (scale)", inputs: c.inputs[:2], outputs: c.outputs, run: c.bilinear}
		sq := runOn(t, ref, bil, mapInputs(hostIn, func(v float32) float32 { return v * v }))
		l1 := runOn(t, ref, bil, mapInputs(hostIn, func(v float32) float32 { return float32(math.Abs(float64(v))) }))
		ref.Close()
		got := runOn(t, gpu, c.opCase, hostIn)
		var worstA, worstB, sigmas float64
		for i := range got {
			g := float64(got[i])
			s2, s1 := math.Sqrt(float64(sq[i])), float64(l1[i])
			out := func(w float64) float64 { // the cuDNN output rounding
				if cudnnPath && c.conv {
					return f.unit * math.Abs(w)
				}
				return 0
			}
			wr, w := float64(wantR[i]), float64(want[i])
			boundA := c.alpha*accTol*s1 + out(wr) + 1e-5*(1+math.Abs(wr))
			boundB := c.alpha*(6*f.unit*s2+accTol*s1) + out(w) + 1e-5*(1+math.Abs(w))
			ea, eb := math.Abs(g-wr)/boundA, math.Abs(g-w)/boundB
			if math.IsNaN(g) {
				ea, eb = math.Inf(1), math.Inf(1)
			}
			worstA, worstB = math.Max(worstA, ea), math.Max(worstB, eb)
			if s2 > 0 {
				sigmas = math.Max(sigmas, math.Abs(g-w)/(c.alpha*f.unit*s2))
			}
		}
		status, failA := "ok", worstA > 1
		if failA && worstB <= 1 && cudnnPath && c.conv {
			if algo, ok := transformsOperands(gpu, c); ok {
				status, failA = "ok: (a) waived for "+algo, false
			}
		}
		if failA || worstB > 1 {
			status = "FAIL"
			if cudnnPath && c.conv {
				status += fmt.Sprintf(" (cuDNN plan: %s)", planOf(gpu, c))
			}
			failed++
		}
		fmt.Fprintf(&table, "%-80s %6d %14.3g %14.3g %14.3g  %s\n", c.name, c.k, worstA, worstB, sigmas, status)
	}
	t.Log(table.String())
	if failed > 0 {
		t.Fatalf("%d %s ops exceed their error bounds (a ratio above 1)", failed, f.precision)
	}
}

// planOf is the cuDNN plan of convolution case c on gpu, or why it has
// none.
func planOf(gpu backend.Backend, c bf16Case) string {
	plans := cuda.ConvPlans(gpu, c.shape)
	if plans == nil {
		return "none: cuDNN did not see the shape"
	}
	p := plans[c.direction]
	if p.Chosen && p.Im2col == "" {
		return fmt.Sprintf("%s (%s)", p, cuda.ConvAlgoName(c.direction, p.Algo))
	}
	return p.String()
}

// transformsOperands says whether cuDNN ran convolution case c on gpu
// with an algorithm that transforms the operands (FFT, Winograd), and
// names it.
func transformsOperands(gpu backend.Backend, c bf16Case) (string, bool) {
	plans := cuda.ConvPlans(gpu, c.shape)
	if plans == nil {
		return "", false
	}
	p := plans[c.direction]
	if !p.Chosen || p.Im2col != "" {
		return "", false
	}
	name := cuda.ConvAlgoName(c.direction, p.Algo)
	return name, strings.Contains(name, "FFT") || strings.Contains(name, "WINOGRAD")
}

// plainLayout is the layout of the 16-bit compute path with float32
// activations: channels-last on cuDNN (auto's order at bf16 and fp16,
// without its 16-bit storage), NCHW on im2col.
func plainLayout(noCuDNN bool) string {
	if noCuDNN {
		return cuda.NCHW
	}
	return cuda.NHWC
}

// GEMMs and convolutions in bf16 on each path, against the CPU. On the
// cuDNN path, the shapes cuDNN certainly runs in bf16 (cudnnMustRunBF16)
// must have run there, not on im2col, or the test would check im2col
// twice.
func TestBF16ParityWithCPU(t *testing.T) { checkHalfParity(t, bf16Format) }

// checkHalfParity is TestBF16ParityWithCPU for format f.
func checkHalfParity(t *testing.T, f halfFormat) {
	for _, path := range []struct {
		name    string
		noCuDNN bool
	}{{"cuDNN", false}, {"im2col", true}} {
		t.Run(path.name, func(t *testing.T) {
			gpu := openGPU(t, cuda.Options{Precision: f.precision, NoCuDNN: path.noCuDNN, CuDNNOnly: !path.noCuDNN, Layout: plainLayout(path.noCuDNN)}, !path.noCuDNN)
			defer gpu.Close()
			cases := bf16ConvCases()
			if path.noCuDNN { // GEMMs never use cuDNN: once is enough
				cases = append(bf16GemmCases(), cases...)
			}
			checkHalf(t, gpu, f, !path.noCuDNN, cases)
			t.Logf("GPU backend after the cases (it counts any convolution cuDNN does not support): %s", gpu.Name())
			if !path.noCuDNN {
				checkCudnnPlans(t, gpu, convShapes, cudnnMustRunBF16(t, gpu))
			}
		})
	}
}

// exactInputs are values whose bf16 rounding is known: ties, values just
// either side of a tie, exact ones, and a spread of magnitudes (no
// subnormals, nothing near float32's largest).
func exactInputs() []float32 {
	vals := []float32{
		1 + 1.0/256,               // tie between 1 and 1+2⁻⁷: to even, 1
		1 + 3.0/256,               // tie between 1+2⁻⁷ and 1+2⁻⁶: to even, 1+2⁻⁶
		-(1 + 1.0/256),            // -1
		1 + 1.0/256 + 1.0/(1<<20), // above the tie: 1+2⁻⁷
		1 + 1.0/256 - 1.0/(1<<20), // below the tie: 1
		3, 0, -0.5,                // exact
		65504, 3.14159, 1e30, -1e-30, // rounded
		255.5, 257, // ties: to even, 256 both
	}
	rng := rand.New(rand.NewPCG(3, 16))
	for len(vals) < 1000 {
		vals = append(vals, float32(rng.NormFloat64()*math.Pow(10, 6*rng.Float64()-3)))
	}
	return vals
}

// sixteenths are integers in [-127, 127] times 2⁻⁴: exact in bf16, and
// every sum of them times ±1 below 2²⁰ in magnitude is exact in float32.
func sixteenths(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.IntN(255)-127) / 16
	}
	return v
}

func signs(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(1 - 2*rng.IntN(2))
	}
	return v
}

// run1 uploads inputs, runs op into one output of n values and returns it.
func run1(t *testing.T, b backend.Backend, n int, op func(in []backend.Tensor, out backend.Tensor), inputs ...[]float32) []float32 {
	t.Helper()
	var in []backend.Tensor
	for _, v := range inputs {
		x := b.Alloc(len(v))
		b.Upload(x, v)
		in = append(in, x)
	}
	out := b.Alloc(n)
	op(in, out)
	got := make([]float32, n)
	b.Download(got, out)
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, x := range append(in, out) {
		b.Free(x)
	}
	return got
}

// convRef is the exact convolution of sixteenths by ±1 weights, in int64.
func convRef(x, w []float32, s backend.ConvShape) []float32 {
	oh, ow := s.OutH(), s.OutW()
	y := make([]float32, s.N*s.OC*oh*ow)
	for n := 0; n < s.N; n++ {
		for o := 0; o < s.OC; o++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					var sum int64
					for c := 0; c < s.C; c++ {
						for ky := 0; ky < s.KH; ky++ {
							for kx := 0; kx < s.KW; kx++ {
								iy, ix := i*s.Stride-s.Pad+ky, j*s.Stride-s.Pad+kx
								if iy < 0 || iy >= s.H || ix < 0 || ix >= s.W {
									continue
								}
								sum += int64(x[((n*s.C+c)*s.H+iy)*s.W+ix]*16) * int64(w[((o*s.C+c)*s.KH+ky)*s.KW+kx])
							}
						}
					}
					y[((n*s.OC+o)*oh+i)*ow+j] = float32(sum) / 16
				}
			}
		}
	}
	return y
}

// compareExact counts outputs that differ from want; with ulps > 0 it
// fails only on those more than that many bf16 ulps away, the ulp of
// max(|want|, the root mean square of want): an algorithm that transforms
// tiles (FFT, Winograd) errs by a fraction of the tile's magnitude, which
// outputs near or at zero see in full, so they are allowed the same
// absolute error as a typical output of the case.
func compareExact(t *testing.T, what string, got, want []float32, ulps float64) {
	t.Helper()
	rms := 0.0
	for _, w := range want {
		rms += float64(w) * float64(w)
	}
	rms = math.Sqrt(rms / float64(max(len(want), 1)))
	differ, far := 0, 0
	for i := range want {
		if got[i] == want[i] {
			continue
		}
		differ++
		ulp := math.Ldexp(1, math.Ilogb(math.Max(math.Abs(float64(want[i])), rms))-7)
		if ulps == 0 || math.Abs(float64(got[i]-want[i])) > ulps*ulp || math.IsNaN(float64(got[i])) {
			if far < 5 {
				t.Errorf("%s: output %d is %g (bits %08x), want %g (bits %08x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
			}
			far++
		}
	}
	if far > 0 {
		t.Errorf("%s: %d of %d outputs wrong", what, far, len(want))
	}
	t.Logf("%s: %d of %d outputs exact", what, len(want)-differ, len(want))
}

// Exact cases. Multiplying by ±1 shows the rounding itself: a GEMM with
// k = 1 against [1, −1] must return ±bf16(x), ties to even, bit for bit,
// and so must a 1×1 convolution on both paths (cuDNN's bf16 output of a
// bf16 value is that value). Binary weights times bf16-exact activations
// (sixteenths) must give the exact sums on the GEMM and im2col paths, and
// those sums rounded to bf16 on cuDNN, which may be a ulp off (of the
// output or, near zero, of a typical output) where its algorithm
// transforms the data (FFT, Winograd); that shape must run on cuDNN where
// cuDNN certainly runs bf16.
func TestBF16ExactCases(t *testing.T) {
	vals := exactInputs()
	m := len(vals)
	rounded := make([]float32, 2*m) // [m][2] for the GEMM, [2][m] for the convolution
	for i, v := range vals {
		rounded[2*i], rounded[2*i+1] = roundBF16(v), -roundBF16(v)
	}
	planes := make([]float32, 2*m)
	for i, v := range vals {
		planes[i], planes[m+i] = roundBF16(v), -roundBF16(v)
	}
	for v, want := range map[float32]float32{1 + 1.0/256: 1, 1 + 3.0/256: 1 + 1.0/64, 1 + 1.0/256 + 1.0/(1<<20): 1 + 1.0/128, 3.14159: 3.140625} {
		if got := roundBF16(v); got != want {
			t.Fatalf("roundBF16(%g) = %g, want %g", v, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(5, 5))
	const batch, inDim, outs = 64, 300, 100
	x, w := sixteenths(rng, batch*inDim), signs(rng, outs*inDim)
	dense := make([]float32, batch*outs) // y = x·Wᵀ
	for i := 0; i < batch; i++ {
		for j := 0; j < outs; j++ {
			var s int64
			for q := 0; q < inDim; q++ {
				s += int64(x[i*inDim+q]*16) * int64(w[j*inDim+q])
			}
			dense[i*outs+j] = float32(s) / 16
		}
	}
	dy := sixteenths(rng, batch*outs)
	denseData := make([]float32, batch*inDim) // dx = dy·W
	for i := 0; i < batch; i++ {
		for q := 0; q < inDim; q++ {
			var s int64
			for j := 0; j < outs; j++ {
				s += int64(dy[i*outs+j]*16) * int64(w[j*inDim+q])
			}
			denseData[i*inDim+q] = float32(s) / 16
		}
	}
	cs := backend.ConvShape{N: 4, C: 16, H: 8, W: 8, OC: 32, KH: 3, KW: 3, Stride: 1, Pad: 1}
	cx, cw := sixteenths(rng, cs.N*cs.C*cs.H*cs.W), signs(rng, cs.OC*cs.C*cs.KH*cs.KW)
	conv := convRef(cx, cw, cs)
	one := backend.ConvShape{N: 1, C: 1, H: 1, W: m, OC: 2, KH: 1, KW: 1, Stride: 1, Pad: 0}
	padded := backend.ConvShape{N: 1, C: 1, H: 1, W: m, OC: 2, KH: 1, KW: 1, Stride: 1, Pad: 1} // im2col, not pointwise
	paddedWant := make([]float32, 2*3*(m+2))
	for o := 0; o < 2; o++ {
		for j := 0; j < m; j++ {
			paddedWant[(o*3+1)*(m+2)+j+1] = planes[o*m+j]
		}
	}
	for _, path := range []struct {
		name    string
		noCuDNN bool
	}{{"cuDNN", false}, {"im2col", true}} {
		t.Run(path.name, func(t *testing.T) {
			gpu := openGPU(t, cuda.Options{Precision: cuda.BF16, NoCuDNN: path.noCuDNN, CuDNNOnly: !path.noCuDNN, Layout: plainLayout(path.noCuDNN)}, !path.noCuDNN)
			defer gpu.Close()
			convOp := func(s backend.ConvShape) func([]backend.Tensor, backend.Tensor) {
				return func(in []backend.Tensor, out backend.Tensor) { gpu.Conv2DForward(out, in[0], in[1], s) }
			}
			if path.noCuDNN {
				compareExact(t, "Gemm k=1: ±bf16(x)", run1(t, gpu, 2*m, func(in []backend.Tensor, out backend.Tensor) {
					gpu.Gemm(false, false, m, 2, 1, 1, in[0], in[1], 0, out)
				}, vals, []float32{1, -1}), rounded, 0)
				compareExact(t, "Gemm 64x100x300, sixteenths · ±1 weightsᵀ", run1(t, gpu, batch*outs, func(in []backend.Tensor, out backend.Tensor) {
					gpu.Gemm(false, true, batch, outs, inDim, 1, in[0], in[1], 0, out)
				}, x, w), dense, 0)
				compareExact(t, "Gemm 64x300x100, sixteenths · ±1 weights", run1(t, gpu, batch*inDim, func(in []backend.Tensor, out backend.Tensor) {
					gpu.Gemm(false, false, batch, inDim, outs, 1, in[0], in[1], 0, out)
				}, dy, w), denseData, 0)
				compareExact(t, "Conv2DForward 1x1 pad 1: ±bf16(x)", run1(t, gpu, len(paddedWant), convOp(padded), vals, []float32{1, -1}), paddedWant, 0)
			}
			compareExact(t, "Conv2DForward 1x1: ±bf16(x)", run1(t, gpu, 2*m, convOp(one), vals, []float32{1, -1}), planes, 0)
			want, ulps := conv, 0.0
			if !path.noCuDNN {
				want, ulps = make([]float32, len(conv)), 1
				for i, v := range conv {
					want[i] = roundBF16(v)
				}
			}
			compareExact(t, fmt.Sprintf("Conv2DForward %+v, sixteenths · ±1 weights", cs), run1(t, gpu, len(conv), convOp(cs), cx, cw), want, ulps)
			if !path.noCuDNN {
				checkCudnnPlans(t, gpu, []backend.ConvShape{one, cs}, cudnnMustRunBF16(t, gpu))
			}
		})
	}
}

// Name says the precision, and New refuses one it does not know.
func TestNameReportsPrecision(t *testing.T) {
	for _, p := range []string{"", cuda.FP32, cuda.TF32, cuda.BF16, cuda.FP16} {
		gpu, err := cuda.New(0, cuda.Options{Precision: p})
		if err != nil {
			t.Fatal(err)
		}
		name := gpu.Name()
		gpu.Close()
		want := "precision " + p
		if p == "" {
			want = "precision fp32"
		}
		if !strings.Contains(name, want) {
			t.Errorf("Options.Precision %q: Name = %q, want it to say %q", p, name, want)
		}
	}
}

// Training in bf16 tracks training in fp32 on the same GPU: the same
// models and steps as TestTrainingLossesMatchCPU, plus 30-step MLP runs.
// The first loss differs only by the forward pass's rounding (well under
// 1%); later ones drift as the two runs' weights part, by a few tenths of
// a percent per step at most in bf16's 2⁻⁸. 5% of 1+loss at every step
// still fails a bf16 path that computes anything wrong, which moves losses
// by tens of percent in a few steps. Binary nets are held to that up to
// the step where their training turns chaotic, and to the range of fp32
// runs with the learning rate nudged after it (fp32Reference). The losses must also differ somewhere: identical ones would
// mean bf16 never ran. The conv nets also train with their activations
// stored as bf16 (layout auto at bf16, and nhwc-bf16), which adds a
// rounding of each activation and gradient between convolutions, as
// PyTorch's autocast does, within the same bounds; layout nhwc keeps them
// float32 (plain bf16). In ResNet-20 storage must change the losses
// against plain bf16 (a residual sum of two bf16 values is rounded
// again). In VGG-5 it need not: every value stored as bf16 there is
// either one plain bf16 also rounds before its next GEMM or convolution,
// or one that only ReLU, max pooling or a copy touches first, and those
// commute with rounding — so the losses may equal plain bf16's bit for
// bit. Where a run strays, the log has every loss and how each of its
// convolutions ran.
func TestBF16TrainingTracksFP32(t *testing.T) {
	models := map[string]trainer.BenchModel{}
	for _, m := range trainer.BenchModels() {
		models[m.Name] = m
	}
	plainBF16 := map[string][]float64{} // layout nhwc's bf16 losses, by model and mode
	refs := map[string]fp32Reference{}  // by model and mode
	for _, c := range []struct {
		model  string
		mode   string
		steps  int
		layout string
		// storageChanges: bf16 storage must change the losses against
		// plain bf16.
		storageChanges bool
	}{
		{"mlp300", "float", 30, cuda.LayoutAuto, false},
		{"mlp300", "binary", 30, cuda.LayoutAuto, false},
		{"resnet20", "float", 5, cuda.NHWC, false},
		{"resnet20", "binary", 5, cuda.NHWC, false},
		{"resnet20", "float", 5, cuda.LayoutAuto, true},
		{"resnet20", "binary", 5, cuda.LayoutAuto, true},
		{"vgg5", "float", 5, cuda.NHWCBF16, false},
	} {
		key := c.model + " " + c.mode
		ref, ok := refs[key]
		if !ok {
			ref = fp32ReferenceFor(t, models[c.model], c.mode, c.steps, bf16Format)
			refs[key] = ref
		}
		var kept *keepConvChoices
		keep := func(be backend.Backend) backend.Backend {
			kept = &keepConvChoices{Backend: be.(*cuda.Backend)}
			return kept
		}
		got, name, err := trainer.StepLossesWrapped(models[c.model], c.mode, "cuda", cuda.BF16, c.layout, c.steps, keep)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(name, "precision bf16") {
			t.Fatalf("the bf16 run's backend is %q", name)
		}
		if c.layout != cuda.NHWC && !cudnnInUse.MatchString(name) {
			t.Logf("%s %s, layout %s: not compared, bf16 activations need cuDNN: %s", c.model, c.mode, c.layout, name)
			continue
		}
		// Every layout but nhwc stores bf16 activations.
		if stored := strings.Contains(name, "bf16 activations"); stored != (c.layout != cuda.NHWC) {
			t.Fatalf("the bf16 run in layout %s has backend %q", c.layout, name)
		}
		if c.layout == cuda.NHWC {
			plainBF16[key] = got
		}
		if c.storageChanges {
			plain, ok := plainBF16[key]
			if !ok {
				if plain, _, err = trainer.StepLosses(models[c.model], c.mode, "cuda", cuda.BF16, cuda.NHWC, c.steps); err != nil {
					t.Fatal(err)
				}
			}
			if slices.Equal(plain, got) {
				t.Errorf("%s %s: layout %s gives the losses of layout nhwc bit for bit; bf16 storage did not run", c.model, c.mode, c.layout)
			}
		}
		label := fmt.Sprintf("%s %s, layout %s", c.model, c.mode, c.layout)
		if ref.check(t, label, bf16Format, got) {
			t.Logf("how its convolutions ran:%s", kept.choiceList())
		}
	}
}

// Binary nets train chaotically: many latent weights lie near zero, and
// which of them cross it in a step, a discrete event, sets the next
// losses. A change of the size of one 16-bit rounding can then send two
// runs apart, all computed correctly. In fp32 on the CPU, binary
// ResNet-20's losses over TestBF16TrainingTracksFP32's five steps are
// 11.354, 10.405, 9.819, 9.523, 12.592; with the learning rate 2⁻⁸ lower,
// 11.354, 10.407, 9.819, 8.563, 10.768. On an H100, bf16 with bf16
// activations gave 11.354, 10.419, 9.813, 8.608, 10.785, bit for bit in
// two processes (docs/gpu/2026-11-28, with the CPU runs in cpu-chaos.md).
//
// fp32Reference is what a 16-bit training run is checked against: fp32's
// losses and, for a binary net, fp32's with the learning rate changed by
// the format's unit roundoff either way (nudged).
type fp32Reference struct {
	losses []float64
	nudged [][]float64
	// tracked is how many of the first losses a 16-bit run is held to:
	// all for float nets; for binary ones those before the first step
	// where a nudged run leaves losses by more than trackTol.
	tracked int
}

// The bounds of a 16-bit run's losses (relative to 1+|fp32's|): the
// first, which only the forward pass's rounding moves, and later ones.
const firstTrackTol, trackTol = 1e-2, 5e-2

// fp32ReferenceFor trains m in mode for steps steps in fp32 on the GPU,
// and nudged for format f where mode is binary. It fails the test where a
// nudge leaves the losses unchanged (it did not reach the optimizer) or
// sends them apart before the third step, which would leave almost
// nothing to check.
func fp32ReferenceFor(t *testing.T, m trainer.BenchModel, mode string, steps int, f halfFormat) fp32Reference {
	t.Helper()
	want, _, err := trainer.StepLosses(m, mode, "cuda", cuda.FP32, cuda.LayoutAuto, steps)
	if err != nil {
		t.Fatal(err)
	}
	ref := fp32Reference{losses: want, tracked: len(want)}
	if mode != "binary" {
		return ref
	}
	for _, factor := range []float32{1 - float32(f.unit), 1 + float32(f.unit)} {
		nudge := func(be backend.Backend) backend.Backend { return lrScaled{Backend: be.(*cuda.Backend), factor: factor} }
		got, _, err := trainer.StepLossesWrapped(m, mode, "cuda", cuda.FP32, cuda.LayoutAuto, steps, nudge)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(got, want) {
			t.Fatalf("%s %s: fp32 with the learning rate times %v gives fp32's losses bit for bit; the nudge did not reach the optimizer", m.Name, mode, factor)
		}
		ref.nudged = append(ref.nudged, got)
		for i := range got {
			if math.Abs(got[i]-want[i])/(1+math.Abs(want[i])) > trackTol {
				t.Logf("%s %s: in fp32 with the learning rate times %v, the loss at step %d is %.4f, not %.4f; from there on the 16-bit losses are held to the range of the fp32 runs", m.Name, mode, factor, i, got[i], want[i])
				ref.tracked = min(ref.tracked, i)
				break
			}
		}
	}
	if ref.tracked < 3 {
		t.Fatalf("%s %s: fp32 with its learning rate changed by %g leaves its losses at step %d; too little left to compare", m.Name, mode, f.unit, ref.tracked)
	}
	return ref
}

// check holds the 16-bit run's losses got (label names the run) to the
// reference: every one finite; the tracked ones within firstTrackTol (the
// first) or trackTol of fp32's, not all equal to them (which would mean
// format f never ran); later ones within trackTol of the range the fp32
// and nudged runs span at that step. It logs the comparison, and every
// loss where a run strays or is not tracked to the end, and says whether
// the run strayed.
func (r fp32Reference) check(t *testing.T, label string, f halfFormat, got []float64) (strayed bool) {
	t.Helper()
	want := r.losses
	worst, same := 0.0, true
	for i := range want {
		margin := trackTol * (1 + math.Abs(want[i]))
		switch {
		case math.IsNaN(got[i]) || math.IsInf(got[i], 0):
			t.Errorf("%s, step %d: %s loss %v", label, i, f.precision, got[i])
			strayed = true
		case i < r.tracked:
			d := math.Abs(got[i]-want[i]) / (1 + math.Abs(want[i]))
			limit := trackTol
			if i == 0 {
				limit = firstTrackTol
			}
			if d > limit {
				t.Errorf("%s, step %d: %s loss %.6f, fp32 %.6f (relative difference %.3g, tolerance %.3g)", label, i, f.precision, got[i], want[i], d, limit)
				strayed = true
			}
			worst = math.Max(worst, d)
			same = same && got[i] == want[i]
		default:
			lo, hi := want[i], want[i]
			for _, n := range r.nudged {
				lo, hi = math.Min(lo, n[i]), math.Max(hi, n[i])
			}
			if got[i] < lo-margin || got[i] > hi+margin {
				t.Errorf("%s, step %d: %s loss %.6f, outside fp32's %.6f…%.6f (with the learning rate nudged) by more than %.3g", label, i, f.precision, got[i], lo, hi, margin)
				strayed = true
			}
		}
	}
	if same {
		t.Errorf("%s: %s losses are the fp32 ones bit for bit; %s did not run", label, f.precision, f.precision)
	}
	t.Logf("%s: %d steps, %d held to fp32's, fp32 losses %.4f…%.4f, %s %.4f…%.4f, largest relative difference %.3g", label, len(want), r.tracked,
		want[0], want[len(want)-1], f.precision, got[0], got[len(got)-1], worst)
	if strayed || r.tracked < len(want) {
		t.Logf("every loss: fp32 %.5f", want)
		for _, n := range r.nudged {
			t.Logf("fp32, nudged %.5f", n)
		}
		t.Logf("%s %.5f", f.precision, got)
	}
	return strayed
}

// lrScaled is a CUDA backend whose SGD and Adam steps use the learning
// rate times factor.
type lrScaled struct {
	*cuda.Backend
	factor float32
}

func (l lrScaled) SGDStep(w, g, buf backend.Tensor, n int, p backend.SGDParams) {
	p.LR *= l.factor
	l.Backend.SGDStep(w, g, buf, n, p)
}

func (l lrScaled) AdamStep(w, g, m, v backend.Tensor, n int, p backend.AdamParams) {
	p.LR *= l.factor
	l.Backend.AdamStep(w, g, m, v, n, p)
}

// keepConvChoices is a CUDA backend that keeps its convolution choices
// when it is closed.
type keepConvChoices struct {
	*cuda.Backend
	choices []backend.ConvChoice
}

func (k *keepConvChoices) Close() error {
	k.choices = k.ConvChoices()
	return k.Backend.Close()
}

// choiceList lists the kept choices, one a line.
func (k *keepConvChoices) choiceList() string {
	var b strings.Builder
	for _, c := range k.choices {
		fmt.Fprintf(&b, "\n%-48s %s", c.Op, c.How)
	}
	return b.String()
}
