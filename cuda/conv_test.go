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
	"strings"
	"testing"

	"iterbin/backend"
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

// convTolerance is the tolerance of a convolution summing k products of
// N(0, 1) values, under maxError's |got−want| / (1+|want|). fp32 keeps the
// 1e-4 of the other ops. TF32 rounds each operand to 10 mantissa bits
// (relative error up to 2⁻¹¹), so a sum of k products is off by about
// 2⁻¹¹·√k in absolute terms; outputs near zero see all of it. Eight times
// that, and never below 1e-2, leaves room for the largest of thousands of
// outputs without hiding a wrong index (an error of order 1).
func convTolerance(tf32 bool, k int) float64 {
	if !tf32 {
		return 1e-4
	}
	return math.Max(1e-2, 8*math.Pow(2, -11)*math.Sqrt(float64(k)))
}

// convCases are the three convolution ops over convShapes.
func convCases(tf32 bool) []opCase {
	var cases []opCase
	for _, s := range convShapes {
		in, out, w := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW(), s.OC*s.C*s.KH*s.KW
		cases = append(cases,
			opCase{name: fmt.Sprintf("Conv2DForward %+v", s), tol: convTolerance(tf32, s.C*s.KH*s.KW), inputs: []int{in, w}, outputs: []int{out},
				run: func(b backend.Backend, i, o []backend.Tensor) { b.Conv2DForward(o[0], i[0], i[1], s) }},
			opCase{name: fmt.Sprintf("Conv2DBackwardData %+v", s), tol: convTolerance(tf32, s.OC*s.KH*s.KW), inputs: []int{out, w}, outputs: []int{in},
				run: func(b backend.Backend, i, o []backend.Tensor) { b.Conv2DBackwardData(o[0], i[0], i[1], s) }},
			opCase{name: fmt.Sprintf("Conv2DBackwardFilter %+v", s), tol: convTolerance(tf32, s.N*s.OutH()*s.OutW()), inputs: []int{out, in}, outputs: []int{w},
				run: func(b backend.Backend, i, o []backend.Tensor) { b.Conv2DBackwardFilter(o[0], i[0], i[1], s) }},
		)
	}
	return cases
}

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

// Every convolution, on each path and precision, against the CPU.
func TestConvParityWithCPU(t *testing.T) {
	for _, path := range []struct {
		name    string
		noCuDNN bool
	}{{"cuDNN", false}, {"im2col", true}} {
		for _, precision := range []struct {
			name string
			tf32 bool
		}{{"fp32", false}, {"tf32", true}} {
			t.Run(path.name+"/"+precision.name, func(t *testing.T) {
				gpu := openGPU(t, cuda.Options{Precision: precision.name, NoCuDNN: path.noCuDNN}, !path.noCuDNN)
				defer gpu.Close()
				checkParity(t, gpu, convCases(precision.tf32))
			})
		}
	}
}

// The cuDNN and im2col paths agree in fp32, and cuDNN gives the same
// results again when its plans are reused (the second run of each shape).
func TestConvPathsAgree(t *testing.T) {
	cases := convCases(false)
	inputs := make([][][]float32, len(cases))
	for i, c := range cases {
		inputs[i] = caseInputs(c)
	}
	run := func(opts cuda.Options, wantCuDNN bool, repeats int) [][][][]float32 {
		gpu := openGPU(t, opts, wantCuDNN)
		defer gpu.Close()
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
	dnn := run(cuda.Options{}, true, 2)
	im2col := run(cuda.Options{NoCuDNN: true}, false, 1)[0]
	for i, c := range cases {
		if e := maxError(dnn[0][i], im2col[i]); e > c.tol {
			t.Errorf("%s: cuDNN and im2col differ by %.3g (tolerance %.3g)", c.name, e, c.tol)
		}
		if e := maxError(dnn[1][i], dnn[0][i]); e > c.tol {
			t.Errorf("%s: cuDNN's second run differs from its first by %.3g", c.name, e)
		} else if e > 0 {
			t.Logf("%s: cuDNN's second run differs from its first by %.3g (a nondeterministic algorithm was faster by more than the slack)", c.name, e)
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
	on, err := cuda.New(0, cuda.Options{})
	if err != nil {
		t.Fatal(err)
	}
	name = on.Name()
	on.Close()
	switch {
	case cudnnInUse.MatchString(name):
		t.Logf("Name: %s", name)
	case strings.Contains(name, "no cuDNN: im2col+cuBLAS convolutions; "):
		t.Skipf("cuDNN did not load on this machine; the fallback is named with its reason: %s", name)
	default:
		t.Errorf("Name = %q names neither cuDNN nor the im2col fallback", name)
	}
}
