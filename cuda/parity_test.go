//go:build cuda

// These tests need an NVIDIA GPU, or the CPU emulation of the driver,
// cuBLAS and cuDNN in emulator/ first on LD_LIBRARY_PATH (`make
// test-cuda-emulated`, which CI runs). gorgonia.org/cu's package init
// exits the process when the driver finds no device, so a test binary
// built with -tags cuda cannot start (let alone skip) without one: `make
// test-cuda` checks for a GPU with nvidia-smi first and prints why it
// skips.

package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
	"iterbin/cuda"
	"iterbin/trainer"
)

// opCase is one row of the parity table: an op run on both backends over
// the same random inputs; every output is compared.
type opCase struct {
	name string
	tol  float64 // max |gpu−cpu| / (1+|cpu|); 0 means bit-exact
	// products, where set, marks an fp32 convolution: inputs 0 and 1 are
	// its operands, its one output sums that many of their products, and
	// each output's error is held to fp32ConvBound (conv_test.go) instead
	// of tol.
	products int
	inputs   []int
	outputs  []int
	// gen, if set, makes input i (labels, ±1 weights…).
	gen func(i int, rng *rand.Rand, n int) []float32
	run func(b backend.Backend, in, out []backend.Tensor)
	// activations are the inputs that are n×c×s activations, which
	// channelsLastInputs stores channels-last on the GPU before the op.
	activations []activationInput
}

// activationInput says input i of a case is an n×c×s activation.
type activationInput struct{ i, n, c, s int }

// channelsLastInputs are the cases that have activation inputs, run with
// those stored channels-last (NHWC) on the GPU, so that the ops take
// their NHWC kernels there; the CPU runs them as they are.
func channelsLastInputs(cases []opCase) []opCase {
	var nhwc []opCase
	for _, c := range cases {
		if len(c.activations) == 0 {
			continue
		}
		run, acts := c.run, c.activations
		c.name += " (inputs NHWC)"
		c.run = func(b backend.Backend, in, out []backend.Tensor) {
			for _, a := range acts {
				cuda.ToChannelsLast(b, in[a.i], a.n, a.c, a.s)
			}
			run(b, in, out)
		}
		nhwc = append(nhwc, c)
	}
	return nhwc
}

func labelsGen(classes int) func(int, *rand.Rand, int) []float32 {
	return func(i int, rng *rand.Rand, n int) []float32 {
		v := make([]float32, n)
		for j := range v {
			v[j] = float32(rng.IntN(classes))
		}
		return v
	}
}

func parityCases() []opCase {
	var cases []opCase
	for _, d := range [][3]int{{1, 1, 1}, {33, 17, 65}, {100, 300, 784}, {7, 1, 129}} {
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			m, n, k, ta, tb := d[0], d[1], d[2], tr[0], tr[1]
			cases = append(cases, opCase{name: fmt.Sprintf("Gemm %dx%dx%d tA=%v tB=%v", m, n, k, ta, tb), tol: 1e-4,
				inputs: []int{m * k, k * n, m * n}, outputs: []int{m * n},
				run: func(b backend.Backend, in, out []backend.Tensor) {
					b.Copy(out[0], in[2], m*n)
					b.Gemm(ta, tb, m, n, k, 0.5, in[0], in[1], -1, out[0])
				}})
		}
	}
	const n = 1237
	cases = append(cases,
		opCase{name: "Fill 1237", inputs: []int{}, outputs: []int{n}, run: func(b backend.Backend, in, out []backend.Tensor) { b.Fill(out[0], 2.5, n) }},
		opCase{name: "Copy 1237", inputs: []int{n}, outputs: []int{n}, run: func(b backend.Backend, in, out []backend.Tensor) { b.Copy(out[0], in[0], n) }},
		opCase{name: "AddBias 3x5x7", tol: 1e-6, inputs: []int{105, 5}, outputs: []int{105}, activations: []activationInput{{0, 3, 5, 7}}, run: func(b backend.Backend, in, out []backend.Tensor) {
			b.Copy(out[0], in[0], 105)
			b.AddBias(out[0], in[1], 3, 5, 7)
		}},
		opCase{name: "BiasGrad 3x5x7", tol: 1e-5, inputs: []int{105}, outputs: []int{5}, activations: []activationInput{{0, 3, 5, 7}}, run: func(b backend.Backend, in, out []backend.Tensor) { b.BiasGrad(out[0], in[0], 3, 5, 7) }},
		opCase{name: "BiasGrad 64x40x300", tol: 1e-4, inputs: []int{64 * 40 * 300}, outputs: []int{40}, activations: []activationInput{{0, 64, 40, 300}}, run: func(b backend.Backend, in, out []backend.Tensor) {
			b.BiasGrad(out[0], in[0], 64, 40, 300)
		}},
		opCase{name: "ReLUForward 1237", inputs: []int{n}, outputs: []int{n}, run: func(b backend.Backend, in, out []backend.Tensor) { b.ReLUForward(out[0], in[0], n) }},
		opCase{name: "ReLUBackward 1237", inputs: []int{n, n}, outputs: []int{n}, run: func(b backend.Backend, in, out []backend.Tensor) { b.ReLUBackward(out[0], in[0], in[1], n) }},
		opCase{name: "Add 1237", tol: 1e-7, inputs: []int{n, n}, outputs: []int{n}, run: func(b backend.Backend, in, out []backend.Tensor) { b.Add(out[0], in[0], in[1], n) }},
		opCase{name: "Sign 1237 (exact)", inputs: []int{n}, outputs: []int{n}, run: func(b backend.Backend, in, out []backend.Tensor) { b.Sign(out[0], in[0], n) }},
		opCase{name: "SignScaled 13x97", tol: 1e-6, inputs: []int{13 * 97}, outputs: []int{13 * 97}, run: func(b backend.Backend, in, out []backend.Tensor) { b.SignScaled(out[0], in[0], 13, 97) }},
		opCase{name: "STEClippedMask 1237 (exact)", inputs: []int{n, n}, outputs: []int{n}, run: func(b backend.Backend, in, out []backend.Tensor) {
			b.Copy(out[0], in[0], n)
			b.STEClippedMask(out[0], in[1], n)
		}},
		opCase{name: "Clip 1237 (exact)", inputs: []int{n}, outputs: []int{n}, run: func(b backend.Backend, in, out []backend.Tensor) {
			b.Copy(out[0], in[0], n)
			b.Clip(out[0], -1, 1, n)
		}},
		opCase{name: "AdamStep ×2 1237", tol: 1e-5, inputs: []int{n, n}, outputs: []int{n, n, n}, run: func(b backend.Backend, in, out []backend.Tensor) {
			b.Copy(out[0], in[0], n)
			for s := 1; s <= 2; s++ {
				b.AdamStep(out[0], in[1], out[1], out[2], n, backend.AdamParams{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-4, Step: s})
			}
		}},
		opCase{name: "SGDStep ×2 1237", tol: 1e-6, inputs: []int{n, n}, outputs: []int{n, n}, run: func(b backend.Backend, in, out []backend.Tensor) {
			b.Copy(out[0], in[0], n)
			for s := 0; s < 2; s++ {
				b.SGDStep(out[0], in[1], out[1], n, backend.SGDParams{LR: 0.1, Momentum: 0.9, WeightDecay: 1e-4})
			}
		}},
		opCase{name: "LogSoftmax 7x10", tol: 1e-6, inputs: []int{70}, outputs: []int{70}, run: func(b backend.Backend, in, out []backend.Tensor) { b.LogSoftmax(out[0], in[0], 7, 10) }},
		opCase{name: "NLLLoss 1x10, 129x10", tol: 1e-5, inputs: []int{1290, 129}, outputs: []int{3, 1290}, gen: func(i int, rng *rand.Rand, n int) []float32 {
			if i == 1 {
				return labelsGen(10)(i, rng, n)
			}
			return nil
		}, run: func(b backend.Backend, in, out []backend.Tensor) {
			b.LogSoftmax(out[1], in[0], 129, 10)
			b.NLLLoss(out[0], out[1], in[1], 1, 10)
			b.NLLLoss(out[0], out[1], in[1], 129, 10)
		}},
		// ImageNet's 1000 classes, and scores of three values, so that rows
		// have tied maxima: even rows are labelled with the first maximum
		// (a hit), odd rows with the second (a tie that is not a hit).
		func() opCase {
			const rows, cols = 37, 1000
			var scores []float32
			return opCase{name: "LogSoftmax+NLLLoss 37x1000, tied maxima", tol: 1e-5, inputs: []int{rows * cols, rows}, outputs: []int{3, rows * cols},
				gen: func(i int, rng *rand.Rand, n int) []float32 {
					v := make([]float32, n)
					if i == 0 {
						for j := range v {
							v[j] = float32(rng.IntN(3))
						}
						scores = v
						return v
					}
					for r := range v {
						seen := 0
						for c := 0; c < cols; c++ {
							if scores[r*cols+c] == 2 {
								if seen == r%2 {
									v[r] = float32(c)
									break
								}
								seen++
							}
						}
					}
					return v
				}, run: func(b backend.Backend, in, out []backend.Tensor) {
					b.LogSoftmax(out[1], in[0], rows, cols)
					b.NLLLoss(out[0], out[1], in[1], rows, cols)
				}}
		}(),
		opCase{name: "LogSoftmaxNLLBackward 129x10", tol: 1e-6, inputs: []int{1290, 129}, outputs: []int{1290, 1290}, gen: func(i int, rng *rand.Rand, n int) []float32 {
			if i == 1 {
				return labelsGen(10)(i, rng, n)
			}
			return nil
		}, run: func(b backend.Backend, in, out []backend.Tensor) {
			b.LogSoftmax(out[1], in[0], 129, 10)
			b.LogSoftmaxNLLBackward(out[0], out[1], in[1], 129, 10, 1.0/129)
		}},
	)
	// Shapes 4 to 6 split each channel's sums among several blocks (rows of
	// 300, of 4099, and ResNet-20's first stage).
	// The last two have more channels than one NHWC block takes (32), the
	// last rows for several parts per channel.
	for _, s := range []backend.BNShape{{N: 2, C: 3, Spatial: 1}, {N: 5, C: 7, Spatial: 9}, {N: 100, C: 300, Spatial: 1},
		{N: 64, C: 5, Spatial: 300}, {N: 16, C: 3, Spatial: 4099}, {N: 128, C: 16, Spatial: 1024}, {N: 8, C: 40, Spatial: 49},
		{N: 16, C: 72, Spatial: 256}} {
		cnt := s.Count()
		c := s.C
		act := []activationInput{{0, s.N, s.C, s.Spatial}}
		cases = append(cases,
			opCase{name: fmt.Sprintf("BatchNormTrain %+v", s), tol: 1e-5, inputs: []int{cnt, c, c}, outputs: []int{cnt, cnt, c, c, c, c}, activations: act, run: func(b backend.Backend, in, out []backend.Tensor) {
				b.Fill(out[5], 1, c)
				b.BatchNormTrain(out[0], out[1], out[2], out[3], out[4], out[5], in[0], in[1], in[2], s, 0.1, 1e-5)
			}},
			opCase{name: fmt.Sprintf("BatchNormEval %+v", s), tol: 1e-5, inputs: []int{cnt, c, c, c, c}, outputs: []int{cnt}, activations: act, gen: func(i int, rng *rand.Rand, n int) []float32 {
				if i == 4 { // a variance must be positive
					v := make([]float32, n)
					for j := range v {
						v[j] = 0.5 + rng.Float32()
					}
					return v
				}
				return nil
			}, run: func(b backend.Backend, in, out []backend.Tensor) {
				b.BatchNormEval(out[0], in[0], in[1], in[2], in[3], in[4], s, 1e-5)
			}},
			opCase{name: fmt.Sprintf("BatchNormBackward %+v", s), tol: 1e-4, inputs: []int{cnt, c, c, cnt}, outputs: []int{cnt, cnt, c, c, c, c, cnt, c, c}, activations: act, run: func(b backend.Backend, in, out []backend.Tensor) {
				b.BatchNormTrain(out[0], out[1], out[2], out[3], out[4], out[5], in[0], in[1], in[2], s, 0.1, 1e-5)
				b.BatchNormBackward(out[6], out[7], out[8], in[3], out[1], out[3], in[1], s)
			}},
			opCase{name: fmt.Sprintf("BatchNormReLUTrain %+v", s), tol: 1e-5, inputs: []int{cnt, c, c}, outputs: []int{cnt, c, c, c, c}, activations: act, run: func(b backend.Backend, in, out []backend.Tensor) {
				b.Fill(out[4], 1, c)
				b.(backend.Fused).BatchNormReLUTrain(out[0], out[1], out[2], out[3], out[4], in[0], in[1], in[2], s, 0.1, 1e-5)
			}},
			opCase{name: fmt.Sprintf("BatchNormAddReLUTrain %+v", s), tol: 1e-5, inputs: []int{cnt, cnt, c, c}, outputs: []int{cnt, c, c, c, c}, activations: act,
				run: func(b backend.Backend, in, out []backend.Tensor) {
					b.Fill(out[4], 1, c)
					b.(backend.FusedResidual).BatchNormAddReLUTrain(out[0], out[1], out[2], out[3], out[4], in[0], in[1], in[2], in[3], s, 0.1, 1e-5)
				}},
			opCase{name: fmt.Sprintf("BatchNormAddReLUBackward %+v", s), tol: 1e-4, inputs: []int{cnt, cnt, c, c, cnt}, outputs: []int{cnt, c, c, c, c, cnt, c, c, cnt},
				activations: []activationInput{{4, s.N, s.C, s.Spatial}}, run: func(b backend.Backend, in, out []backend.Tensor) {
					f := b.(backend.FusedResidual)
					b.Fill(out[4], 1, c)
					f.BatchNormAddReLUTrain(out[0], out[1], out[2], out[3], out[4], in[0], in[1], in[2], in[3], s, 0.1, 1e-5)
					f.BatchNormAddReLUBackward(out[5], out[6], out[7], out[8], in[4], out[0], in[0], out[1], out[2], in[2], s)
				}},
			opCase{name: fmt.Sprintf("BatchNormReLUBackward %+v", s), tol: 1e-4, inputs: []int{cnt, c, c, cnt}, outputs: []int{cnt, c, c, c, c, cnt, c, c},
				activations: []activationInput{{3, s.N, s.C, s.Spatial}}, run: func(b backend.Backend, in, out []backend.Tensor) {
					f := b.(backend.Fused)
					b.Fill(out[4], 1, c)
					f.BatchNormReLUTrain(out[0], out[1], out[2], out[3], out[4], in[0], in[1], in[2], s, 0.1, 1e-5)
					f.BatchNormReLUBackward(out[5], out[6], out[7], in[3], in[0], out[1], out[2], in[1], in[2], s)
				}},
		)
	}
	cases = append(cases, opCase{name: "AddReLU 1237", tol: 1e-7, inputs: []int{n, n}, outputs: []int{n}, run: func(b backend.Backend, in, out []backend.Tensor) {
		b.(backend.Fused).AddReLU(out[0], in[0], in[1], n)
	}},
		// Elementwise ops on one channels-last input and one flat one, and
		// an optimizer step on a filter and its gradient.
		opCase{name: "AddReLU 3x8x9 then ReLUBackward", tol: 1e-7, inputs: []int{216, 216, 216}, outputs: []int{216, 216},
			activations: []activationInput{{0, 3, 8, 9}, {2, 3, 8, 9}}, run: func(b backend.Backend, in, out []backend.Tensor) {
				b.(backend.Fused).AddReLU(out[0], in[0], in[1], 216)
				b.ReLUBackward(out[1], in[2], out[0], 216)
			}},
		opCase{name: "SGDStep ×2 on a 16x8x3x3 filter", tol: 1e-6, inputs: []int{1152, 1152}, outputs: []int{1152, 1152},
			activations: []activationInput{{1, 16, 8, 9}}, run: func(b backend.Backend, in, out []backend.Tensor) {
				b.Copy(out[0], in[0], 1152)
				for s := 0; s < 2; s++ {
					b.SGDStep(out[0], in[1], out[1], 1152, backend.SGDParams{LR: 0.1, Momentum: 0.9, WeightDecay: 1e-4})
				}
			}},
		opCase{name: "SignScaled 16x72 (a 16x8x3x3 filter)", tol: 1e-6, inputs: []int{1152}, outputs: []int{1152},
			activations: []activationInput{{0, 16, 8, 9}}, run: func(b backend.Backend, in, out []backend.Tensor) { b.SignScaled(out[0], in[0], 16, 72) }},
	)
	cases = append(cases, partialWriteCases("NHWC", cuda.ToChannelsLast, 1e-7)...)
	for _, s := range []backend.PoolShape{{N: 2, C: 3, H: 6, W: 5, Kernel: 2, Stride: 2}, {N: 1, C: 2, H: 7, W: 7, Kernel: 3, Stride: 2, Pad: 1},
		{N: 3, C: 8, H: 9, W: 9, Kernel: 3, Stride: 2, Pad: 1}, {N: 2, C: 16, H: 4, W: 4, Kernel: 2, Stride: 2}} {
		in, out := s.N*s.C*s.H*s.W, s.N*s.C*s.OutH()*s.OutW()
		cases = append(cases,
			opCase{name: fmt.Sprintf("MaxPool2DForward %+v (exact)", s), inputs: []int{in}, outputs: []int{out, out}, activations: []activationInput{{0, s.N, s.C, s.H * s.W}},
				run: func(b backend.Backend, i, o []backend.Tensor) { b.MaxPool2DForward(o[0], o[1], i[0], s) }},
			opCase{name: fmt.Sprintf("MaxPool2DBackward %+v", s), tol: 1e-6, inputs: []int{in, out}, outputs: []int{out, out, in},
				activations: []activationInput{{0, s.N, s.C, s.H * s.W}}, run: func(b backend.Backend, i, o []backend.Tensor) {
					b.MaxPool2DForward(o[0], o[1], i[0], s)
					b.MaxPool2DBackward(o[2], i[1], o[1], s)
				}},
		)
	}
	cases = append(cases,
		opCase{name: "GlobalAvgPoolForward 3x5x49", tol: 1e-6, inputs: []int{735}, outputs: []int{15}, activations: []activationInput{{0, 3, 5, 49}},
			run: func(b backend.Backend, i, o []backend.Tensor) { b.GlobalAvgPoolForward(o[0], i[0], 3, 5, 49) }},
		opCase{name: "GlobalAvgPoolBackward 3x5x49", tol: 1e-6, inputs: []int{15}, outputs: []int{735}, run: func(b backend.Backend, i, o []backend.Tensor) { b.GlobalAvgPoolBackward(o[0], i[0], 3, 5, 49) }},
	)
	// A residual block's first convolution adding its input gradient to the
	// shortcut's (backend.FusedResidual).
	for _, s := range []backend.ConvShape{{N: 5, C: 16, H: 8, W: 8, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 3, C: 8, H: 9, W: 7, OC: 16, KH: 3, KW: 3, Stride: 2, Pad: 1}} {
		in, out, w := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW(), s.OC*s.C*s.KH*s.KW
		cases = append(cases, opCase{name: fmt.Sprintf("Conv2DBackwardDataAdd %+v", s), products: s.OC*s.KH*s.KW + 1, inputs: []int{out, w, in}, outputs: []int{in},
			activations: []activationInput{{2, s.N, s.C, s.H * s.W}}, run: func(b backend.Backend, i, o []backend.Tensor) {
				b.Copy(o[0], i[2], in)
				b.(backend.FusedResidual).Conv2DBackwardDataAdd(o[0], i[0], i[1], s)
			}})
	}
	for _, s := range []backend.ShortcutShape{{N: 2, C: 4, H: 7, W: 6, OC: 8, Stride: 2}, {N: 1, C: 16, H: 32, W: 32, OC: 32, Stride: 2}} {
		in, out := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW()
		cases = append(cases,
			opCase{name: fmt.Sprintf("ShortcutAForward %+v (exact)", s), inputs: []int{in}, outputs: []int{out}, activations: []activationInput{{0, s.N, s.C, s.H * s.W}},
				run: func(b backend.Backend, i, o []backend.Tensor) { b.ShortcutAForward(o[0], i[0], s) }},
			opCase{name: fmt.Sprintf("ShortcutABackward %+v (exact)", s), inputs: []int{out}, outputs: []int{in}, activations: []activationInput{{0, s.N, s.OC, s.OutH() * s.OutW()}},
				run: func(b backend.Backend, i, o []backend.Tensor) { b.ShortcutABackward(o[0], i[0], s) }},
		)
	}
	return cases
}

// partialWriteCases check that writes over part of a tensor stored NHWC
// (store puts it so, its kind named by kind) leave the rest as it was: an
// op in place over the first 2 of 4 samples (the last two go back to flat
// float32 first, prepareWrite's tail), an upload of the first of 2 (all of
// it back to flat first). tol is the op's.
func partialWriteCases(kind string, store func(b backend.Backend, t backend.Tensor, n, c, s int), tol float64) []opCase {
	return []opCase{
		{name: "AddReLU in place over 2 of 4 " + kind + " samples", tol: tol, inputs: []int{288, 144}, outputs: []int{288},
			run: func(b backend.Backend, in, out []backend.Tensor) {
				b.Copy(out[0], in[0], 288)
				store(b, out[0], 4, 8, 9)
				store(b, in[1], 2, 8, 9)
				b.(backend.Fused).AddReLU(out[0], out[0], in[1], 144)
			}},
		{name: "Upload over 1 of 2 " + kind + " samples", inputs: []int{144}, outputs: []int{144},
			run: func(b backend.Backend, in, out []backend.Tensor) {
				first := make([]float32, 72)
				for i := range first {
					first[i] = float32(i)
				}
				b.Copy(out[0], in[0], 144)
				store(b, out[0], 2, 8, 9)
				b.Upload(out[0], first)
			}},
	}
}

// Every op against the CPU, in each layout: with layout nhwc the ops
// also run on inputs stored channels-last (their NHWC kernels), and
// global average pooling's backward pass writes NHWC where cuDNN runs.
func TestOpParityWithCPU(t *testing.T) {
	for _, layout := range []string{cuda.NCHW, cuda.NHWC} {
		gpu, err := cuda.New(0, cuda.Options{Layout: layout})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("layout %s, GPU backend: %s", layout, gpu.Name())
		cases := parityCases()
		if layout == cuda.NHWC {
			cases = append(cases, channelsLastInputs(cases)...)
		}
		checkParity(t, gpu, cases)
		gpu.Close()
	}
}

// caseInputs makes the random inputs of a case (the same on every backend).
func caseInputs(c opCase) [][]float32 {
	rng := rand.New(rand.NewPCG(7, uint64(len(c.name))))
	var hostIn [][]float32
	for i, n := range c.inputs {
		var v []float32
		if c.gen != nil {
			v = c.gen(i, rng, n)
		}
		if v == nil {
			v = make([]float32, n)
			for j := range v {
				v[j] = float32(rng.NormFloat64())
			}
		}
		hostIn = append(hostIn, v)
	}
	return hostIn
}

// runCase runs c on b over hostIn and returns its outputs.
func runCase(b backend.Backend, c opCase, hostIn [][]float32) ([][]float32, error) {
	var in, out []backend.Tensor
	for _, v := range hostIn {
		t := b.Alloc(len(v))
		b.Upload(t, v)
		in = append(in, t)
	}
	for _, n := range c.outputs {
		out = append(out, b.Alloc(n))
	}
	c.run(b, in, out)
	var res [][]float32
	for i, n := range c.outputs {
		v := make([]float32, n)
		b.Download(v, out[i])
		res = append(res, v)
	}
	err := b.Sync()
	for _, t := range append(in, out...) {
		b.Free(t)
	}
	return res, err
}

// maxError is the largest |got−want| / (1+|want|) over all outputs; a NaN
// on either side, or ∞ − ∞, counts as +∞.
func maxError(got, want [][]float32) float64 {
	worst := 0.0
	for o := range want {
		for i := range want[o] {
			e := math.Abs(float64(got[o][i])-float64(want[o][i])) / (1 + math.Abs(float64(want[o][i])))
			if math.IsNaN(e) || math.IsNaN(float64(got[o][i])) {
				e = math.Inf(1)
			}
			worst = math.Max(worst, e)
		}
	}
	return worst
}

// checkParity runs every case on gpu and on a fresh CPU backend, logs a
// table of the errors and fails the test if any exceeds its tolerance.
// Cases with products set (fp32 convolutions) show their largest error
// over its bound, whose tolerance is 1.
func checkParity(t *testing.T, gpu backend.Backend, cases []opCase) {
	t.Helper()
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-90s %12s %10s  %s\n", "op", "max err", "tolerance", "")
	failed := 0
	for _, c := range cases {
		hostIn := caseInputs(c)
		got, want := runBoth(t, gpu, c, hostIn)
		worst, tol, unit := maxError(got, want), c.tol, ""
		if c.products > 0 {
			scale, err := convScale(c, hostIn)
			if err != nil {
				t.Fatalf("%s on the CPU (error scale): %v", c.name, err)
			}
			worst, tol, unit = convExcess(c, scale, got[0], want[0]), 1, " (÷ bound)"
		}
		status := "ok"
		if worst > tol {
			status = "FAIL"
			failed++
		}
		fmt.Fprintf(&table, "%-90s %12.3g %10.3g  %s%s\n", c.name, worst, tol, status, unit)
	}
	t.Log(table.String())
	if failed > 0 {
		t.Fatalf("%d ops differ from the CPU backend beyond their tolerance", failed)
	}
}

// runBoth runs c over hostIn on a fresh CPU backend, then on gpu, and
// returns the GPU's outputs and the CPU's.
func runBoth(t *testing.T, gpu backend.Backend, c opCase, hostIn [][]float32) (got, want [][]float32) {
	t.Helper()
	ref := cpu.New()
	want, err := runCase(ref, c, hostIn)
	ref.Close()
	if err != nil {
		t.Fatalf("%s on the CPU: %v", c.name, err)
	}
	if got, err = runCase(gpu, c, hostIn); err != nil {
		t.Fatalf("%s on the GPU: %v", c.name, err)
	}
	return got, want
}

// A label that is not a class is reported by Sync, as the CPU backend
// reports it from the op.
func TestBadLabelIsReported(t *testing.T) {
	gpu, err := cuda.New(0, cuda.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	logp, labels, sums := gpu.Alloc(30), gpu.Alloc(3), gpu.Alloc(3)
	gpu.Upload(labels, []float32{1, 12, 2})
	gpu.NLLLoss(sums, logp, labels, 3, 10)
	if err := gpu.Sync(); err == nil || !strings.Contains(err.Error(), "not a class") {
		t.Fatalf("Sync after a bad label: %v", err)
	}
}

// Whole training steps: the GPU's losses track the CPU's, the conv nets'
// with their activations NCHW and channels-last (whose conversions at a
// flatten into dense layers VGG-5 exercises).
func TestTrainingLossesMatchCPU(t *testing.T) {
	models := map[string]trainer.BenchModel{}
	for _, m := range trainer.BenchModels() {
		models[m.Name] = m
	}
	for _, c := range []struct {
		model string
		mode  string
		steps int
		tol   float64
	}{
		{"mlp300", "float", 20, 1e-3},
		{"mlp300", "binary", 20, 1e-2},
		{"resnet20", "float", 5, 1e-2},
		{"resnet20", "binary", 5, 1e-2},
		{"vgg5", "float", 5, 1e-2},
	} {
		want, _, err := trainer.StepLosses(models[c.model], c.mode, "cpu", "fp32", cuda.LayoutAuto, c.steps)
		if err != nil {
			t.Fatal(err)
		}
		layouts := []string{cuda.NCHW, cuda.NHWC}
		if c.model == "mlp300" {
			layouts = []string{cuda.LayoutAuto}
		}
		for _, layout := range layouts {
			got, _, err := trainer.StepLosses(models[c.model], c.mode, "cuda", "fp32", layout, c.steps)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if d := math.Abs(got[i]-want[i]) / (1 + math.Abs(want[i])); d > c.tol || math.IsNaN(got[i]) {
					t.Errorf("%s %s, layout %s, step %d: GPU loss %.6f, CPU %.6f", c.model, c.mode, layout, i, got[i], want[i])
				}
			}
			t.Logf("%s %s, layout %s: %d steps, CPU losses %.4f…%.4f, GPU %.4f…%.4f", c.model, c.mode, layout, c.steps, want[0], want[len(want)-1], got[0], got[len(got)-1])
		}
	}
}

// emulatorOrder is the variable that makes the CPU emulation (emulator/)
// run blocks, and threads between barriers, last to first.
const emulatorOrder = "ITERBIN_EMULATOR_ORDER"

// The same training steps give the same losses bit for bit, run after run:
// every sum on the GPU is taken in a fixed order, none by atomics in the
// order threads happen to reach them. On the CPU emulation the second run
// executes blocks, and threads between barriers, in reverse order, which
// changes the result of any kernel that depends on that order. The conv
// nets run only there: on a GPU each backend times cuDNN's algorithms
// afresh and may pick one that sums in another order.
func TestTrainingIsDeterministic(t *testing.T) {
	models := map[string]trainer.BenchModel{}
	for _, m := range trainer.BenchModels() {
		models[m.Name] = m
	}
	emulated := false
	for _, c := range []struct {
		model, mode, precision, layout string
		conv                           bool
	}{
		{"mlp300", "binary", cuda.FP32, cuda.LayoutAuto, false},
		{"mlp300", "float", cuda.BF16, cuda.LayoutAuto, false},
		{"mlp300", "float", cuda.FP16, cuda.LayoutAuto, false},
		{"resnet20", "binary", cuda.BF16, cuda.NHWCBF16, true},
		{"resnet20", "float", cuda.FP16, cuda.NHWCFP16, true},
		{"resnet20", "float", cuda.FP32, cuda.LayoutAuto, true},
		{"vgg5", "binary", cuda.TF32, cuda.NCHW, true},
	} {
		if c.conv && !emulated {
			t.Logf("%s: skipped on a GPU (cuDNN's algorithm choice is timed per backend)", c.model)
			continue
		}
		t.Setenv(emulatorOrder, "forward")
		first, firstName, err := trainer.StepLosses(models[c.model], c.mode, "cuda", c.precision, c.layout, 2)
		if err != nil {
			t.Fatal(err)
		}
		emulated = strings.Contains(firstName, "CPU emulator")
		t.Setenv(emulatorOrder, "reverse")
		second, secondName, err := trainer.StepLosses(models[c.model], c.mode, "cuda", c.precision, c.layout, 2)
		if err != nil {
			t.Fatal(err)
		}
		if firstName != secondName {
			// The race between cuDNN and im2col went the other way.
			t.Logf("%s %s: the two runs chose different paths, not compared:\n%s\n%s", c.model, c.mode, firstName, secondName)
			continue
		}
		for i := range first {
			if math.Float64bits(first[i]) != math.Float64bits(second[i]) {
				t.Errorf("%s %s, %s, layout %s, step %d: loss %v, then %v", c.model, c.mode, c.precision, c.layout, i, first[i], second[i])
			}
		}
	}
}
