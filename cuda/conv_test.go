//go:build cuda

// Convolutions on both GPU paths, cuDNN and im2col+cuBLAS (Options.NoCuDNN),
// against the CPU backend and against each other. Like every test here,
// they need an NVIDIA GPU (see parity_test.go); on a GPU machine without
// cuDNN the cuDNN-path tests skip and say why (the loader's error, from
// Name).

package cuda_test

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
	"iterbin/cuda"
)

// cudnnInUse matches the part of Name that says cuDNN runs the
// convolutions, e.g. "cuDNN 9.1.0 convolutions".
var cudnnInUse = regexp.MustCompile(`cuDNN \d+\.\d+\.\d+ convolutions`)

// convShapes are awkward on purpose: batch 1 and 5, odd and non-square
// sizes, strides 1 and 2, padding 0 to 3, 1×1, 5×5, 3×5 and 7×7 kernels,
// one channel, and ResNet-sized layers.
var convShapes = []backend.ConvShape{
	{N: 1, C: 3, H: 9, W: 7, OC: 5, KH: 3, KW: 3, Stride: 1, Pad: 1},
	{N: 5, C: 16, H: 8, W: 8, OC: 32, KH: 3, KW: 3, Stride: 2, Pad: 1},
	{N: 5, C: 8, H: 5, W: 5, OC: 7, KH: 1, KW: 1, Stride: 1, Pad: 0},
	{N: 1, C: 3, H: 11, W: 13, OC: 4, KH: 7, KW: 7, Stride: 2, Pad: 3},
	{N: 5, C: 4, H: 6, W: 6, OC: 6, KH: 1, KW: 1, Stride: 2, Pad: 0},
	{N: 5, C: 3, H: 7, W: 9, OC: 5, KH: 3, KW: 3, Stride: 2, Pad: 0},
	{N: 1, C: 6, H: 10, W: 9, OC: 3, KH: 5, KW: 5, Stride: 1, Pad: 2},
	{N: 5, C: 5, H: 5, W: 7, OC: 3, KH: 3, KW: 5, Stride: 1, Pad: 2},
	{N: 5, C: 7, H: 13, W: 11, OC: 9, KH: 3, KW: 3, Stride: 2, Pad: 2},
	{N: 1, C: 1, H: 1, W: 1, OC: 1, KH: 1, KW: 1, Stride: 1, Pad: 0},
	{N: 5, C: 3, H: 32, W: 32, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1},
	{N: 5, C: 32, H: 16, W: 16, OC: 64, KH: 3, KW: 3, Stride: 1, Pad: 1},
	{N: 1, C: 32, H: 16, W: 16, OC: 64, KH: 3, KW: 3, Stride: 1, Pad: 1},
}

// tf32ConvTolerance is the tolerance of a TF32 convolution summing k
// products of N(0, 1) values, under maxError's |got−want| / (1+|want|).
// TF32 rounds each operand to 10 mantissa bits (relative error up to
// 2⁻¹¹), so a sum of k products is off by about 2⁻¹¹·√k in absolute
// terms; outputs near zero see all of it. Eight times that, and never
// below 1e-2, leaves room for the largest of thousands of outputs without
// hiding a wrong index (an error of order 1).
func tf32ConvTolerance(k int) float64 {
	return math.Max(1e-2, 8*math.Pow(2, -11)*math.Sqrt(float64(k)))
}

// fp32ConvSlack is c in fp32ConvBound. Summing k products aᵢbᵢ in fp32
// rounds k times, each time by at most u = 2⁻²⁴ of a partial sum; for
// products of random sign the partial sums grow like √j·S/√k, S =
// √Σ(aᵢbᵢ)², and the roundings add up to about 0.4·u·√k·S (root mean
// square) in sequential order, less in the blocked orders GEMMs use.
// cuDNN's Winograd and FFT algorithms round transformed tiles instead:
// their error follows the magnitude of the whole tile, not of one
// output's products (hence the floor S̄ in convScale), times a constant
// of the transform, of order ten for the Winograd tiles used in fp32.
// 64·u·√k·S is 160 times the sequential root mean square: room for a
// transform sixteen times worse than direct summation at 4.5 standard
// deviations (the largest of 10⁴ outputs), twice over. It still catches
// any error of the data flow (a wrong index or a dropped term errs by
// about S), and a convolution that silently ran as TF32 (operands rounded
// to 2⁻¹¹, erring by 2⁻¹¹·√(2/3)·S ≈ 4e-4·S root mean square) for every
// k here: the largest, 5120, allows 2.7e-4·S.
const fp32ConvSlack = 64

// fp32ConvBound is the error allowed on one output of an fp32 convolution
// summing k products, where scale is its error scale (convScale) and want
// its value: fp32ConvSlack·u·√k·scale, plus 4u·|want| for the rounding of
// the output itself and of alpha and beta scaling (u = 2⁻²⁴).
func fp32ConvBound(k int, scale, want float64) float64 {
	const u = 0x1p-24
	return fp32ConvSlack*u*math.Sqrt(float64(k))*scale + 4*u*math.Abs(want)
}

// convScale returns each output's error scale for an fp32 convolution
// case on the inputs in: max(Sᵢ, S̄), Sᵢ = √Σ(aᵢbᵢ)² over its products
// (the CPU's convolution of the squared operands) and S̄ the root mean
// square of the Sᵢ over the case. On these unit normal inputs S̄ stands
// for the magnitude of the tiles Winograd and FFT algorithms transform,
// which outputs near the border (fewer products) still err by; it also
// keeps an output whose products are all zero (a position stride 2
// skips, say) from getting a zero bound.
func convScale(c opCase, in [][]float32) ([]float64, error) {
	ref := cpu.New()
	defer ref.Close()
	sq, err := runCase(ref, c, mapInputs(in, func(v float32) float32 { return v * v }))
	if err != nil {
		return nil, err
	}
	scale := make([]float64, len(sq[0]))
	mean := 0.0
	for i, v := range sq[0] {
		scale[i] = math.Sqrt(float64(v))
		mean += float64(v)
	}
	floor := math.Sqrt(mean / float64(max(len(scale), 1)))
	for i := range scale {
		scale[i] = math.Max(scale[i], floor)
	}
	return scale, nil
}

// convExcess is the largest |got−want| / fp32ConvBound over the outputs
// of an fp32 convolution case, with scale from convScale; above 1 fails.
// A NaN on either side counts as +∞.
func convExcess(c opCase, scale []float64, got, want []float32) float64 {
	worst := 0.0
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		e := math.Abs(g-w) / fp32ConvBound(c.products, scale[i], w)
		if math.IsNaN(e) || math.IsNaN(g) {
			e = math.Inf(1)
		}
		worst = math.Max(worst, e)
	}
	return worst
}

// convCases are the three convolution ops over convShapes: in fp32 held
// to fp32ConvBound, in TF32 to tf32ConvTolerance.
func convCases(tf32 bool) []opCase {
	var cases []opCase
	for _, s := range convShapes {
		in, out, w := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW(), s.OC*s.C*s.KH*s.KW
		fwd, data, filter := s.C*s.KH*s.KW, s.OC*s.KH*s.KW, s.N*s.OutH()*s.OutW()
		c := []opCase{
			{name: fmt.Sprintf("Conv2DForward %+v", s), products: fwd, inputs: []int{in, w}, outputs: []int{out},
				run: func(b backend.Backend, i, o []backend.Tensor) { b.Conv2DForward(o[0], i[0], i[1], s) }},
			{name: fmt.Sprintf("Conv2DBackwardData %+v", s), products: data, inputs: []int{out, w}, outputs: []int{in},
				run: func(b backend.Backend, i, o []backend.Tensor) { b.Conv2DBackwardData(o[0], i[0], i[1], s) }},
			{name: fmt.Sprintf("Conv2DBackwardFilter %+v", s), products: filter, inputs: []int{out, in}, outputs: []int{w},
				run: func(b backend.Backend, i, o []backend.Tensor) { b.Conv2DBackwardFilter(o[0], i[0], i[1], s) }},
		}
		if tf32 {
			for i := range c {
				c[i].tol, c[i].products = tf32ConvTolerance(c[i].products), 0
			}
		}
		cases = append(cases, c...)
	}
	return cases
}

// checkCudnnPlans logs how cuDNN runs each direction of every shape on
// gpu (the algorithm chosen, its math type and workspace, or why it runs
// on im2col), so a failure can be traced to an algorithm, and fails the
// test where a shape for which mustRun is true fell back to im2col.
//
// The backend's own listing of its choices (backend.ConvPlanner, which
// `iterbin bench --profile` prints) must say the same of each plan, under
// the label the profile gives the op.
func checkCudnnPlans(t *testing.T, gpu backend.Backend, shapes []backend.ConvShape, mustRun func(backend.ConvShape) bool) {
	t.Helper()
	listed := map[string][]string{}
	for _, c := range gpu.(backend.ConvPlanner).ConvChoices() {
		listed[c.Op] = append(listed[c.Op], c.How)
	}
	ops := map[string]string{"forward": "Conv2DForward", "backward data": "Conv2DBackwardData", "backward filter": "Conv2DBackwardFilter"}
	var plans strings.Builder
	for _, s := range shapes {
		for _, p := range cuda.ConvPlans(gpu, s) {
			fmt.Fprintf(&plans, "\n%+v %s: %s", s, p.Direction, p)
			if p.Im2col != "" && mustRun(s) {
				t.Errorf("%+v %s: cuDNN must run it, but it fell back to im2col: %s", s, p.Direction, p.Im2col)
			}
			if !p.Chosen && p.Im2col == "" {
				continue
			}
			prefix, reason := fmt.Sprintf("%s, cuDNN algorithm %d (", p.Layout, p.Algo), ""
			if p.Im2col != "" {
				prefix, reason = p.Layout+", ", p.Im2col
			}
			label := backend.ConvLabel(ops[p.Direction], s)
			if !slices.ContainsFunc(listed[label], func(how string) bool { return strings.HasPrefix(how, prefix) && strings.Contains(how, reason) }) {
				t.Errorf("%s: ConvChoices lists %q, none starting %q and saying %q", label, listed[label], prefix, reason)
			}
		}
	}
	n, first := cuda.ConvFallbacks(gpu)
	t.Logf("cuDNN plans:%s\n%d convolution directions on im2col (first: %s)", plans.String(), n, first)
}

// cuDNN supports every float convolution, in fp32 and TF32 alike.
func always(backend.ConvShape) bool { return true }

// openGPU opens the GPU backend with opts; with wantCuDNN it skips the
// test, saying why, when cuDNN does not run the convolutions.
func openGPU(t *testing.T, opts cuda.Options, wantCuDNN bool) backend.Backend {
	t.Helper()
	gpu, err := cuda.New(0, opts)
	if err != nil {
		t.Fatal(err)
	}
	name := gpu.Name()
	if wantCuDNN && !cudnnInUse.MatchString(name) {
		gpu.Close()
		t.Skipf("cuDNN does not run the convolutions on this machine: %s", name)
	}
	t.Logf("GPU backend: %s", name)
	return gpu
}

// Every convolution, on each path, layout and precision, against the
// CPU. With channels-last in TF32, every direction of a shape whose
// channel counts are multiples of 8 must have run on cuDNN in NHWC (in
// strict fp32 the plans only say where each ran: cuDNN may lack NHWC
// kernels without tensor cores, and those directions run NCHW).
func TestConvParityWithCPU(t *testing.T) {
	for _, path := range []struct {
		name    string
		noCuDNN bool
		layout  string
	}{{"cuDNN-NCHW", false, cuda.NCHW}, {"cuDNN-NHWC", false, cuda.NHWC}, {"im2col", true, cuda.NCHW}} {
		for _, precision := range []struct {
			name string
			tf32 bool
		}{{"fp32", false}, {"tf32", true}} {
			t.Run(path.name+"/"+precision.name, func(t *testing.T) {
				gpu := openGPU(t, cuda.Options{Precision: precision.name, NoCuDNN: path.noCuDNN, CuDNNOnly: !path.noCuDNN, Layout: path.layout}, !path.noCuDNN)
				defer gpu.Close()
				checkParity(t, gpu, convCases(precision.tf32))
				if !path.noCuDNN {
					checkCudnnPlans(t, gpu, convShapes, always)
				}
				if path.layout == cuda.NHWC && precision.tf32 {
					checkChannelsLast(t, gpu, convShapes)
				}
			})
		}
	}
}

// checkChannelsLast fails the test where a direction of a shape in shapes
// whose channel counts (C and OC) are multiples of 8 did not run on
// cuDNN in NHWC on gpu, which checks that channels-last is on and its
// bookkeeping sends convolutions there.
//
// (cuDNN's NHWC tensor-core kernels take every such convolution in TF32
// and bf16.)
func checkChannelsLast(t *testing.T, gpu backend.Backend, shapes []backend.ConvShape) {
	t.Helper()
	checked := 0
	for _, s := range shapes {
		if s.C%8 != 0 || s.OC%8 != 0 {
			continue
		}
		for _, p := range cuda.ConvPlans(gpu, s) {
			checked++
			if p.Layout != "NHWC" || p.Im2col != "" {
				t.Errorf("%+v %s: with channels-last on, it ran %s, not on cuDNN in NHWC", s, p.Direction, p)
			}
		}
	}
	if checked == 0 {
		t.Errorf("no convolution with channel counts that are multiples of 8 ran on cuDNN (%s)", gpu.Name())
	}
}

// With the race on (the default), each convolution direction runs on the
// path that timed faster; the results match the CPU on the first run
// (which times both paths) and on later ones.
func TestConvRaceMatchesCPU(t *testing.T) {
	for _, precision := range []string{cuda.FP32, cuda.BF16, cuda.FP16} {
		// The race is on NCHW tensors only.
		gpu := openGPU(t, cuda.Options{Precision: precision, Layout: cuda.NCHW}, true)
		for round := range 2 {
			t.Logf("%s, round %d", precision, round)
			switch precision {
			case cuda.BF16:
				checkHalf(t, gpu, bf16Format, true, bf16ConvCases()) // either path: allow cuDNN's bf16 output
			case cuda.FP16:
				checkHalf(t, gpu, fp16Format, true, bf16ConvCases())
			default:
				checkParity(t, gpu, convCases(false))
			}
		}
		t.Logf("after the race: %s", gpu.Name())
		gpu.Close()
	}
}

// The cuDNN (channels-last, the default) and im2col paths agree in fp32,
// and cuDNN gives the same results again when its plans are reused (the
// second run of each shape).
func TestConvPathsAgree(t *testing.T) {
	cases := convCases(false)
	inputs := make([][][]float32, len(cases))
	for i, c := range cases {
		inputs[i] = caseInputs(c)
	}
	run := func(opts cuda.Options, wantCuDNN bool, repeats int) [][][][]float32 {
		gpu := openGPU(t, opts, wantCuDNN)
		defer gpu.Close()
		if wantCuDNN {
			defer checkCudnnPlans(t, gpu, convShapes, always)
		}
		results := make([][][][]float32, repeats)
		for r := range results {
			for i, c := range cases {
				got, err := runCase(gpu, c, inputs[i])
				if err != nil {
					t.Fatalf("%s (run %d) on %s: %v", c.name, r+1, gpu.Name(), err)
				}
				results[r] = append(results[r], got)
			}
		}
		return results
	}
	dnn := run(cuda.Options{CuDNNOnly: true}, true, 2)
	im2col := run(cuda.Options{NoCuDNN: true}, false, 1)[0]
	for i, c := range cases {
		scale, err := convScale(c, inputs[i])
		if err != nil {
			t.Fatalf("%s on the CPU (error scale): %v", c.name, err)
		}
		if e := convExcess(c, scale, dnn[0][i][0], im2col[i][0]); e > 1 {
			t.Errorf("%s: cuDNN and im2col differ by %.3g times the fp32 bound", c.name, e)
		}
		if e := convExcess(c, scale, dnn[1][i][0], dnn[0][i][0]); e > 1 {
			t.Errorf("%s: cuDNN's second run differs from its first by %.3g times the fp32 bound", c.name, e)
		} else if e > 0 {
			t.Logf("%s: cuDNN's second run differs from its first by %.3g times the fp32 bound (a nondeterministic algorithm was faster by more than the slack)", c.name, e)
		}
	}
}

// Name says which convolution path runs, and why cuDNN does not.
func TestNameReportsConvPath(t *testing.T) {
	off, err := cuda.New(0, cuda.Options{NoCuDNN: true})
	if err != nil {
		t.Fatal(err)
	}
	name := off.Name()
	off.Close()
	if !strings.Contains(name, "im2col+cuBLAS convolutions") || cudnnInUse.MatchString(name) {
		t.Errorf("with NoCuDNN, Name = %q; want it to name the im2col+cuBLAS convolutions", name)
	}
	if !strings.Contains(name, "NCHW activations") {
		t.Errorf("with NoCuDNN, Name = %q; want it to say the activations are NCHW", name)
	}
	on, err := cuda.New(0, cuda.Options{Precision: cuda.TF32})
	if err != nil {
		t.Fatal(err)
	}
	name = on.Name()
	on.Close()
	fp32, err := cuda.New(0, cuda.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fp32Name := fp32.Name()
	fp32.Close()
	switch {
	case cudnnInUse.MatchString(name):
		if !strings.Contains(name, "channels-last (NHWC) activations") {
			t.Errorf("with cuDNN in TF32 and the default layout, Name = %q; want it to say the activations are channels-last", name)
		}
		if !strings.Contains(fp32Name, "NCHW activations") {
			t.Errorf("with cuDNN in fp32 and the default layout, Name = %q; want it to say the activations are NCHW", fp32Name)
		}
		t.Logf("Name: %s", name)
	case strings.Contains(name, "no cuDNN: im2col+cuBLAS convolutions; "):
		t.Skipf("cuDNN did not load on this machine; the fallback is named with its reason: %s", name)
	default:
		t.Errorf("Name = %q names neither cuDNN nor the im2col fallback", name)
	}
}
