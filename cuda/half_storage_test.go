//go:build cuda

// 16-bit storage (Options.Layout nhwc-bf16 and nhwc-fp16, layout.go): the
// activations of convolutional layers held in the precision's 16-bit
// format, channels-last. Each test runs once per format. Like every test
// here these need an NVIDIA GPU (parity_test.go) and skip where cuDNN
// does not load (without it there is no channels-last).
//
// Every input of these cases is rounded to the format on the host, so the
// CPU and the GPU start from the same values, and the activation inputs
// are then stored in it on the GPU (cuda.ToChannelsLastHalf, which is
// exact on such values). What the GPU then adds is one rounding of each
// 16-bit output to nearest even (at most the format's unit roundoff of
// it), on sums the kernels form in float32 or double as the float32 ones
// do; where a later op of a case reads such an output (batch norm's
// xhat), the CPU's copy is rounded too (roundOnCPU). Each case also names
// the outputs that must end stored in 16 bits, and its activation inputs
// must still be 16-bit after it: the proof that the 16-bit kernels ran,
// not the float32 fallback that widens its inputs. The cases that test
// that fallback say so (widens) and must leave those inputs float32.

package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
	"iterbin/cuda"
)

// storageCase is an op over inputs stored as 16-bit NHWC (its
// activations); halfOut are the outputs that must be stored in 16 bits
// after it. The activation inputs must still be 16-bit after it, or,
// where widens is set, float32.
type storageCase struct {
	opCase
	halfOut []int
	widens  bool
}

// roundOnCPU rounds the first n values of t with round on the CPU
// backend, where the GPU stores them in 16 bits and a later op reads
// them; on the GPU it does nothing.
func roundOnCPU(b backend.Backend, t backend.Tensor, n int, round func(float32) float32) {
	if _, ok := b.(*cpu.Backend[float32]); !ok {
		return
	}
	v := make([]float32, n)
	b.Download(v, t)
	for i := range v {
		v[i] = round(v[i])
	}
	b.Upload(t, v)
}

// storageCases are the cases for 16-bit format f. Their tolerances, under
// maxError's |got−want| / (1+|want|): an output that only moves values is
// exact; one rounding of a float32 result is within the unit roundoff of
// it (storedOnce); a backward pass that also reads a rounded forward
// output (xhat, y) sees it through a few more terms (storedTwice).
func storageCases(f halfFormat) []storageCase {
	storedOnce, storedTwice := f.unit, 4*f.unit
	var cases []storageCase
	add := func(c opCase, halfOut ...int) { cases = append(cases, storageCase{c, halfOut, false}) }
	addWidening := func(c opCase) { cases = append(cases, storageCase{c, nil, true}) }
	positive := func(i int) func(int, *rand.Rand, int) []float32 {
		return func(j int, rng *rand.Rand, n int) []float32 {
			if j != i {
				return nil
			}
			v := make([]float32, n)
			for k := range v {
				v[k] = 0.5 + rng.Float32()
			}
			return v
		}
	}
	// Batch norm: more channels than one NHWC block (32), rows for
	// several parts, positions below 8 (the narrow transpose on the way
	// back to flat), and a channel count no 16-bit pack divides (12: its
	// elementwise passes take one element per thread, those of the other
	// shapes a pack of 8 channels per thread).
	for _, s := range []backend.BNShape{{N: 5, C: 8, Spatial: 9}, {N: 8, C: 40, Spatial: 49}, {N: 16, C: 72, Spatial: 256}, {N: 6, C: 16, Spatial: 4},
		{N: 3, C: 12, Spatial: 25}} {
		cnt, c := s.Count(), s.C
		act := func(is ...int) []activationInput {
			var a []activationInput
			for _, i := range is {
				a = append(a, activationInput{i, s.N, s.C, s.Spatial})
			}
			return a
		}
		add(opCase{name: fmt.Sprintf("BatchNormTrain %+v", s), tol: storedOnce, inputs: []int{cnt, c, c}, outputs: []int{cnt, cnt, c, c, c, c},
			activations: act(0), run: func(b backend.Backend, in, out []backend.Tensor) {
				b.Fill(out[5], 1, c)
				b.BatchNormTrain(out[0], out[1], out[2], out[3], out[4], out[5], in[0], in[1], in[2], s, 0.1, 1e-5)
			}}, 0, 1)
		add(opCase{name: fmt.Sprintf("BatchNormBackward %+v", s), tol: storedTwice, inputs: []int{cnt, c, c, cnt}, outputs: []int{cnt, cnt, c, c, c, c, cnt, c, c},
			activations: act(0, 3), run: func(b backend.Backend, in, out []backend.Tensor) {
				b.BatchNormTrain(out[0], out[1], out[2], out[3], out[4], out[5], in[0], in[1], in[2], s, 0.1, 1e-5)
				roundOnCPU(b, out[1], cnt, f.round) // the GPU keeps xhat in 16 bits
				b.BatchNormBackward(out[6], out[7], out[8], in[3], out[1], out[3], in[1], s)
			}}, 0, 1, 6)
		add(opCase{name: fmt.Sprintf("BatchNormReLUTrain %+v", s), tol: storedOnce, inputs: []int{cnt, c, c}, outputs: []int{cnt, c, c, c, c},
			activations: act(0), run: func(b backend.Backend, in, out []backend.Tensor) {
				b.Fill(out[4], 1, c)
				b.(backend.Fused).BatchNormReLUTrain(out[0], out[1], out[2], out[3], out[4], in[0], in[1], in[2], s, 0.1, 1e-5)
			}}, 0)
		add(opCase{name: fmt.Sprintf("BatchNormReLUBackward %+v", s), tol: storedTwice, inputs: []int{cnt, c, c, cnt}, outputs: []int{cnt, c, c, c, c, cnt, c, c},
			activations: act(0, 3), run: func(b backend.Backend, in, out []backend.Tensor) {
				f := b.(backend.Fused)
				b.Fill(out[4], 1, c)
				f.BatchNormReLUTrain(out[0], out[1], out[2], out[3], out[4], in[0], in[1], in[2], s, 0.1, 1e-5)
				f.BatchNormReLUBackward(out[5], out[6], out[7], in[3], in[0], out[1], out[2], in[1], in[2], s)
			}}, 0, 5)
		add(opCase{name: fmt.Sprintf("BatchNormAddReLUTrain %+v", s), tol: storedOnce, inputs: []int{cnt, cnt, c, c}, outputs: []int{cnt, c, c, c, c},
			activations: act(0, 1), run: func(b backend.Backend, in, out []backend.Tensor) {
				b.Fill(out[4], 1, c)
				b.(backend.FusedResidual).BatchNormAddReLUTrain(out[0], out[1], out[2], out[3], out[4], in[0], in[1], in[2], in[3], s, 0.1, 1e-5)
			}}, 0)
		add(opCase{name: fmt.Sprintf("BatchNormAddReLUBackward %+v", s), tol: storedTwice, inputs: []int{cnt, cnt, c, c, cnt},
			outputs: []int{cnt, c, c, c, c, cnt, c, c, cnt}, activations: act(0, 1, 4), run: func(b backend.Backend, in, out []backend.Tensor) {
				f := b.(backend.FusedResidual)
				b.Fill(out[4], 1, c)
				f.BatchNormAddReLUTrain(out[0], out[1], out[2], out[3], out[4], in[0], in[1], in[2], in[3], s, 0.1, 1e-5)
				f.BatchNormAddReLUBackward(out[5], out[6], out[7], out[8], in[4], out[0], in[0], out[1], out[2], in[2], s)
			}}, 0, 5, 8)
		add(opCase{name: fmt.Sprintf("BatchNormEval %+v", s), tol: storedOnce, inputs: []int{cnt, c, c, c, c}, outputs: []int{cnt},
			activations: act(0), gen: positive(4), run: func(b backend.Backend, in, out []backend.Tensor) {
				b.BatchNormEval(out[0], in[0], in[1], in[2], in[3], in[4], s, 1e-5)
			}}, 0)
		// No 16-bit kernel: dy is widened to float32 in place, exactly.
		addWidening(opCase{name: fmt.Sprintf("BiasGrad %+v (dy widened)", s), tol: 1e-4, inputs: []int{cnt}, outputs: []int{c},
			activations: act(0), run: func(b backend.Backend, in, out []backend.Tensor) { b.BiasGrad(out[0], in[0], s.N, s.C, s.Spatial) }})
	}
	const n = 216 // 3×8×9
	a := func(is ...int) []activationInput {
		var acts []activationInput
		for _, i := range is {
			acts = append(acts, activationInput{i, 3, 8, 9})
		}
		return acts
	}
	add(opCase{name: "ReLUForward 3x8x9 (exact)", inputs: []int{n}, outputs: []int{n}, activations: a(0),
		run: func(b backend.Backend, in, out []backend.Tensor) { b.ReLUForward(out[0], in[0], n) }}, 0)
	add(opCase{name: "ReLUBackward 3x8x9 (exact)", inputs: []int{n, n}, outputs: []int{n}, activations: a(0, 1),
		run: func(b backend.Backend, in, out []backend.Tensor) { b.ReLUBackward(out[0], in[0], in[1], n) }}, 0)
	add(opCase{name: "Copy 3x8x9 (exact)", inputs: []int{n}, outputs: []int{n}, activations: a(0),
		run: func(b backend.Backend, in, out []backend.Tensor) { b.Copy(out[0], in[0], n) }}, 0)
	add(opCase{name: "Add 3x8x9", tol: storedOnce, inputs: []int{n, n}, outputs: []int{n}, activations: a(0, 1),
		run: func(b backend.Backend, in, out []backend.Tensor) { b.Add(out[0], in[0], in[1], n) }}, 0)
	add(opCase{name: "AddReLU 3x8x9", tol: storedOnce, inputs: []int{n, n}, outputs: []int{n}, activations: a(0, 1),
		run: func(b backend.Backend, in, out []backend.Tensor) { b.(backend.Fused).AddReLU(out[0], in[0], in[1], n) }}, 0)
	// One input in float32 (flat): the 16-bit one is widened, the sum is
	// float32, exact against the CPU's.
	addWidening(opCase{name: "Add 3x8x9, one input float32", tol: 1e-7, inputs: []int{n, n}, outputs: []int{n}, activations: a(0),
		run: func(b backend.Backend, in, out []backend.Tensor) { b.Add(out[0], in[0], in[1], n) }})
	// Writes over part of a tensor stored in 16 bits (the tail's 16-bit
	// values read from byte 2·144 by prepareWrite's reordering).
	partial := partialWriteCases(f.precision, cuda.ToChannelsLastHalf, storedOnce)
	add(partial[0], 0)
	add(partial[1])
	for _, s := range []backend.PoolShape{{N: 3, C: 8, H: 9, W: 9, Kernel: 3, Stride: 2, Pad: 1}, {N: 2, C: 16, H: 4, W: 4, Kernel: 2, Stride: 2}} {
		in, out := s.N*s.C*s.H*s.W, s.N*s.C*s.OutH()*s.OutW()
		x, dy := activationInput{0, s.N, s.C, s.H * s.W}, activationInput{1, s.N, s.C, s.OutH() * s.OutW()}
		add(opCase{name: fmt.Sprintf("MaxPool2DForward %+v (exact)", s), inputs: []int{in}, outputs: []int{out, out}, activations: []activationInput{x},
			run: func(b backend.Backend, i, o []backend.Tensor) { b.MaxPool2DForward(o[0], o[1], i[0], s) }}, 0)
		add(opCase{name: fmt.Sprintf("MaxPool2DBackward %+v", s), tol: storedOnce, inputs: []int{in, out}, outputs: []int{out, out, in},
			activations: []activationInput{x, dy}, run: func(b backend.Backend, i, o []backend.Tensor) {
				b.MaxPool2DForward(o[0], o[1], i[0], s)
				b.MaxPool2DBackward(o[2], i[1], o[1], s)
			}}, 0, 2)
	}
	add(opCase{name: "GlobalAvgPoolForward 3x8x49", tol: 1e-6, inputs: []int{1176}, outputs: []int{24}, activations: []activationInput{{0, 3, 8, 49}},
		run: func(b backend.Backend, i, o []backend.Tensor) { b.GlobalAvgPoolForward(o[0], i[0], 3, 8, 49) }})
	add(opCase{name: "GlobalAvgPoolBackward 3x8x49", tol: storedOnce, inputs: []int{24}, outputs: []int{1176},
		run: func(b backend.Backend, i, o []backend.Tensor) { b.GlobalAvgPoolBackward(o[0], i[0], 3, 8, 49) }}, 0)
	for _, s := range []backend.ShortcutShape{{N: 2, C: 8, H: 8, W: 6, OC: 16, Stride: 2}, {N: 1, C: 16, H: 32, W: 32, OC: 32, Stride: 2}} {
		in, out := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW()
		add(opCase{name: fmt.Sprintf("ShortcutAForward %+v (exact)", s), inputs: []int{in}, outputs: []int{out}, activations: []activationInput{{0, s.N, s.C, s.H * s.W}},
			run: func(b backend.Backend, i, o []backend.Tensor) { b.ShortcutAForward(o[0], i[0], s) }}, 0)
		add(opCase{name: fmt.Sprintf("ShortcutABackward %+v (exact)", s), inputs: []int{out}, outputs: []int{in}, activations: []activationInput{{0, s.N, s.OC, s.OutH() * s.OutW()}},
			run: func(b backend.Backend, i, o []backend.Tensor) { b.ShortcutABackward(o[0], i[0], s) }}, 0)
	}
	// Convolutions on cuDNN in NHWC: 16-bit activation inputs read as
	// they are, activation outputs written in 16 bits, the filter gradient
	// float32. The filters are 16-bit values too, so the products are
	// exact and only the float32 sums' order and the output's rounding
	// differ.
	for _, s := range []backend.ConvShape{{N: 4, C: 16, H: 8, W: 8, OC: 32, KH: 3, KW: 3, Stride: 1, Pad: 1},
		{N: 3, C: 8, H: 9, W: 7, OC: 16, KH: 3, KW: 3, Stride: 2, Pad: 1}, {N: 5, C: 32, H: 6, W: 6, OC: 16, KH: 1, KW: 1, Stride: 2}} {
		in, out, w := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW(), s.OC*s.C*s.KH*s.KW
		x, y := activationInput{0, s.N, s.C, s.H * s.W}, activationInput{0, s.N, s.OC, s.OutH() * s.OutW()}
		dyAt1 := activationInput{1, s.N, s.OC, s.OutH() * s.OutW()}
		tol := 8 * f.unit // sums of up to a few hundred exact products, then one rounding
		add(opCase{name: fmt.Sprintf("Conv2DForward %+v", s), tol: tol, inputs: []int{in, w}, outputs: []int{out}, activations: []activationInput{x},
			run: func(b backend.Backend, i, o []backend.Tensor) { b.Conv2DForward(o[0], i[0], i[1], s) }}, 0)
		add(opCase{name: fmt.Sprintf("Conv2DBackwardData %+v", s), tol: tol, inputs: []int{out, w}, outputs: []int{in}, activations: []activationInput{y},
			run: func(b backend.Backend, i, o []backend.Tensor) { b.Conv2DBackwardData(o[0], i[0], i[1], s) }}, 0)
		add(opCase{name: fmt.Sprintf("Conv2DBackwardFilter %+v", s), tol: tol, inputs: []int{in, out}, outputs: []int{w}, activations: []activationInput{x, dyAt1},
			run: func(b backend.Backend, i, o []backend.Tensor) { b.Conv2DBackwardFilter(o[0], i[1], i[0], s) }})
		// Twice, each adding in place (convolveAdd): the shape's
		// Conv2DBackwardData case above chose cuDNN's algorithm already.
		add(opCase{name: fmt.Sprintf("Conv2DBackwardDataAdd ×2 %+v", s), tol: 3 * tol, inputs: []int{out, w, in}, outputs: []int{in},
			activations: []activationInput{y, {2, s.N, s.C, s.H * s.W}}, run: func(b backend.Backend, i, o []backend.Tensor) {
				b.Copy(o[0], i[2], in)
				b.(backend.FusedResidual).Conv2DBackwardDataAdd(o[0], i[0], i[1], s)
				b.(backend.FusedResidual).Conv2DBackwardDataAdd(o[0], i[0], i[1], s)
			}}, 0)
	}
	// A shape no case above has: the first call chooses cuDNN's algorithm
	// for the direction, convolving into scratch and adding with Add, the
	// second adds in place.
	s := backend.ConvShape{N: 2, C: 24, H: 5, W: 5, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1}
	in, out, w := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW(), s.OC*s.C*s.KH*s.KW
	add(opCase{name: fmt.Sprintf("Conv2DBackwardDataAdd ×2, first %+v", s), tol: 24 * f.unit, inputs: []int{out, w, in}, outputs: []int{in},
		activations: []activationInput{{0, s.N, s.OC, s.OutH() * s.OutW()}, {2, s.N, s.C, s.H * s.W}}, run: func(b backend.Backend, i, o []backend.Tensor) {
			b.Copy(o[0], i[2], in)
			b.(backend.FusedResidual).Conv2DBackwardDataAdd(o[0], i[0], i[1], s)
			b.(backend.FusedResidual).Conv2DBackwardDataAdd(o[0], i[0], i[1], s)
		}}, 0)
	return cases
}

// inPlaceAdds is how many of storageCases' Conv2DBackwardDataAdd calls
// add in place: both of each shape a Conv2DBackwardData case chose the
// algorithm for already (three shapes), the second of the last case's.
const inPlaceAdds = 7

// Every op with 16-bit kernels, and a few without, on activations stored
// in each 16-bit format, against the CPU on the same (rounded) values; and
// the outputs each case names must be stored in 16 bits after it.
func TestHalfStorageOpParity(t *testing.T) {
	for _, f := range []halfFormat{bf16Format, fp16Format} {
		t.Run(f.precision, func(t *testing.T) { checkStorageOps(t, f) })
	}
}

func checkStorageOps(t *testing.T, f halfFormat) {
	gpu := openGPU(t, cuda.Options{Precision: f.precision, Layout: storageLayout(f), CuDNNOnly: true}, true)
	defer gpu.Close()
	if !strings.Contains(gpu.Name(), f.precision+" activations") {
		t.Fatalf("layout %s is not in use: %s", storageLayout(f), gpu.Name())
	}
	stored := "NHWC " + f.precision
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-90s %12s %10s  %s\n", "op", "max err", "tolerance", "")
	failed := 0
	for _, sc := range storageCases(f) {
		c := sc.opCase
		hostIn := mapAll(caseInputs(c), f.round)
		var layouts, inLayouts []string
		run, acts := c.run, c.activations
		c.run = func(b backend.Backend, in, out []backend.Tensor) {
			for _, a := range acts {
				cuda.ToChannelsLastHalf(b, in[a.i], a.n, a.c, a.s)
			}
			run(b, in, out)
			layouts, inLayouts = layouts[:0], inLayouts[:0]
			for _, t := range out {
				layouts = append(layouts, cuda.TensorLayout(t))
			}
			for _, a := range acts {
				inLayouts = append(inLayouts, cuda.TensorLayout(in[a.i]))
			}
		}
		got, want := runBoth(t, gpu, c, hostIn)
		worst, status := maxError(got, want), "ok"
		if worst > c.tol {
			status = "FAIL"
		}
		for _, o := range sc.halfOut {
			if !strings.HasPrefix(layouts[o], stored) {
				status = fmt.Sprintf("FAIL: output %d is stored %s, not as %s", o, layouts[o], f.precision)
			}
		}
		for k, a := range acts {
			if half := strings.HasPrefix(inLayouts[k], stored); half == sc.widens {
				status = fmt.Sprintf("FAIL: input %d is stored %s after the op (widens: %v)", a.i, inLayouts[k], sc.widens)
			}
		}
		if status != "ok" {
			failed++
		}
		fmt.Fprintf(&table, "%-90s %12.3g %10.3g  %s\n", c.name, worst, c.tol, status)
	}
	t.Log(table.String())
	t.Logf("GPU backend after the cases: %s", gpu.Name())
	if n := cuda.ConvAccumulations(gpu); n != inPlaceAdds {
		t.Errorf("%d convolutions added to their output in place, want %d", n, inPlaceAdds)
	}
	if failed > 0 {
		t.Fatalf("%d ops on %s activations differ from the CPU beyond their tolerance or did not store %s", failed, f.precision, f.precision)
	}
}

// storageLayout is the layout that stores activations in format f.
func storageLayout(f halfFormat) string {
	if f.precision == cuda.FP16 {
		return cuda.NHWCFP16
	}
	return cuda.NHWCBF16
}

// mapAll applies f to every value of every input.
func mapAll(in [][]float32, f func(float32) float32) [][]float32 {
	out := make([][]float32, len(in))
	for i, v := range in {
		out[i] = make([]float32, len(v))
		for j, x := range v {
			out[i][j] = f(x)
		}
	}
	return out
}

// The reorderings alone, on the device: an activation stored as 16-bit
// NHWC (with float32 elements after it) reads back exactly, whether
// Download transposes it to flat float32 (the tiled transpose for 8
// positions or more, the narrow one below) or an op first widens it in
// place to float32 NHWC. Failures here are the bookkeeping's, not an
// op's.
func TestHalfStorageReorders(t *testing.T) {
	for _, f := range []halfFormat{bf16Format, fp16Format} {
		t.Run(f.precision, func(t *testing.T) { checkStorageReorders(t, f) })
	}
}

func checkStorageReorders(t *testing.T, f halfFormat) {
	gpu := openGPU(t, cuda.Options{Precision: f.precision, Layout: storageLayout(f)}, true)
	defer gpu.Close()
	const tail = 17
	for _, sh := range [][3]int{{2, 8, 9}, {3, 5, 4}, {4, 3, 10}, {2, 64, 49}, {5, 16, 1}} {
		n, c, s := sh[0], sh[1], sh[2]
		values := make([]float32, n*c*s+tail)
		for i := range values {
			values[i] = float32(i%251 - 125) // integers both formats hold exactly
		}
		for _, widen := range []bool{false, true} {
			tensor := gpu.Alloc(len(values))
			gpu.Upload(tensor, values)
			cuda.ToChannelsLastHalf(gpu, tensor, n, c, s)
			stored := cuda.TensorLayout(tensor)
			if widen {
				cuda.ToChannelsLast(gpu, tensor, n, c, s)
			}
			widened := cuda.TensorLayout(tensor)
			got := make([]float32, len(values))
			gpu.Download(got, tensor)
			if err := gpu.Sync(); err != nil {
				t.Fatal(err)
			}
			gpu.Free(tensor)
			if want := "NHWC " + f.precision; s > 1 && !strings.HasPrefix(stored, want) {
				t.Errorf("%d×%d×%d: stored %s, not %s", n, c, s, stored, want)
			}
			for i := range values {
				if got[i] != values[i] {
					t.Errorf("%d×%d×%d, stored %s, then %s: element %d reads %v, want %v", n, c, s, stored, widened, i, got[i], values[i])
					break
				}
			}
			t.Logf("%d×%d×%d: stored %s, then %s, read back exactly", n, c, s, stored, widened)
		}
	}
}
