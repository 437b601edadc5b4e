//go:build cuda

// fp16 mixed precision (Options.Precision = "fp16") and its dynamic loss
// scaling (backend.LossScaler). Like every test here these need an NVIDIA
// GPU or the emulator (parity_test.go).
//
// What fp16 promises: bf16's scheme (bf16_test.go) in IEEE half precision,
// 11 significant bits, so products of two operands are exact in fp32 and
// the unit roundoff is 2⁻¹¹; values beyond ±65504 round to ±Inf and
// below 2⁻¹⁴ lose bits (subnormals, down to 2⁻²⁴). What loss scaling
// promises: the loss gradient is multiplied by the scale; every update
// divides it back out, or changes nothing in a step where a checked
// gradient was not finite; the scale halves after such a step and doubles
// after backend.LossScaleGrowthInterval good ones.

package cuda_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
	"iterbin/cuda"
	"iterbin/trainer"
)

// fp16Format is fp16: 11 significant bits, u = 2⁻¹¹.
var fp16Format = halfFormat{precision: cuda.FP16, round: roundFP16, unit: 1.0 / 2048}

// roundFP16 is float32 → fp16 → float32 rounding to nearest, ties to even,
// computed by exponent arithmetic: 11 significant bits, in steps of 2⁻²⁴
// below fp16's normal range, ±Inf from 65520 (halfway past 65504) on.
func roundFP16(f float32) float32 {
	v := float64(f)
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return f
	}
	_, e := math.Frexp(math.Abs(v)) // |v| = m·2^e, m in [0.5, 1)
	q := max(e-11, -24)
	r := math.Ldexp(math.RoundToEven(math.Ldexp(math.Abs(v), -q)), q)
	if r > 65504 {
		r = math.Inf(1)
	}
	return float32(math.Copysign(r, v))
}

// GEMMs and convolutions in fp16 on each path, against the CPU, as
// TestBF16ParityWithCPU does for bf16.
func TestFP16ParityWithCPU(t *testing.T) { checkHalfParity(t, fp16Format) }

// fp16 rounding on the device is roundFP16 bit for bit, at the edges of
// the format: ties and their neighbours, the largest finite value and
// what overflows to Inf, subnormals and what flushes to zero. Each value
// goes through a GEMM with k = 1 and B = 1, whose product is exact, so
// the output is the rounded operand.
func TestFP16Rounding(t *testing.T) {
	gpu := openGPU(t, cuda.Options{Precision: cuda.FP16, NoCuDNN: true}, false)
	defer gpu.Close()
	var in []float32
	for _, v := range []float32{
		1, 1 + 1.0/2048, 1 + 3.0/2048, 1 + 1.0/4096, 1 + 3.0/4096, // ties to even (the unit in the last place is 2⁻¹⁰)
		math.Nextafter32(1+1.0/2048, 2), math.Nextafter32(1+1.0/2048, 0),
		3.14159265, 1000.3, 2049, 2051, // integers above 2048 lose their last bit
		65504, 65519, 65520, 65536, 1e5, 3e38, // the largest finite value, then Inf
		6.1035156e-05, 6.0e-05, 5.9604645e-08, 2.9802322e-08, 4.4703484e-08, 1e-9, // subnormals, flush to zero
	} {
		in = append(in, v, -v)
	}
	a, b, c := gpu.Alloc(len(in)), gpu.Alloc(1), gpu.Alloc(len(in))
	gpu.Upload(a, in)
	gpu.Upload(b, []float32{1})
	gpu.Gemm(false, false, len(in), 1, 1, 1, a, b, 0, c)
	got := make([]float32, len(in))
	gpu.Download(got, c)
	if err := gpu.Sync(); err != nil {
		t.Fatal(err)
	}
	for i, v := range in {
		// A GEMM's sum starts at +0, so an operand rounded to −0 comes out +0.
		if want := roundFP16(v); got[i] != want {
			t.Errorf("fp16(%g) = %g on the GPU, want %g", v, got[i], want)
		}
	}
	for _, c := range []struct{ in, want float32 }{
		{65519, 65504}, {65520, float32(math.Inf(1))}, {1 + 1.0/2048, 1}, {1 + 3.0/2048, 1 + 1.0/512}, {1 + 3.0/4096, 1 + 1.0/1024},
		{2.9802322e-08, 0}, {4.4703484e-08, 5.9604645e-08}, {2051, 2052},
	} {
		if got := roundFP16(c.in); got != c.want {
			t.Errorf("roundFP16(%g) = %g, want %g", c.in, got, c.want)
		}
	}
}

// scalerState reads a backend's loss scaler state.
func scalerState(t *testing.T, ls backend.LossScaler, be backend.Backend) []float32 {
	t.Helper()
	st := make([]float32, backend.LossScaleStateLen)
	be.Download(st, ls.LossScaleState())
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	return st
}

// The loss scaler in closed form, on one fp16 backend: only fp16 scales;
// the loss gradient is the scale times the CPU's; updates of scaled
// gradients equal the CPU's of the true ones; a non-finite gradient (Inf
// or NaN, in any checked tensor) leaves every parameter and optimizer
// state untouched and halves the scale; good steps count up to the growth
// interval, where the scale doubles; the scale stays within float32's
// normal range; Free leaves the state alone.
func TestLossScaling(t *testing.T) {
	for _, p := range []string{cuda.FP32, cuda.TF32, cuda.BF16} {
		gpu := openGPU(t, cuda.Options{Precision: p}, false)
		if ls, ok := gpu.(backend.LossScaler); !ok || ls.ScalesLoss() || ls.LossScaleState() != nil {
			t.Errorf("precision %s scales the loss", p)
		}
		gpu.Close()
	}
	gpu := openGPU(t, cuda.Options{Precision: cuda.FP16}, false)
	defer gpu.Close()
	ls, ok := gpu.(backend.LossScaler)
	if !ok || !ls.ScalesLoss() {
		t.Fatal("precision fp16 does not scale the loss")
	}
	if !strings.Contains(gpu.Name(), "dynamic loss scaling") {
		t.Errorf("Name does not mention loss scaling: %s", gpu.Name())
	}
	const scale = backend.LossScaleInitial
	if st := scalerState(t, ls, gpu); !slices.Equal(st, []float32{scale, 0, 0, 0}) {
		t.Fatalf("initial state %v, want [%d 0 0 0]", st, scale)
	}
	ref := cpu.New()
	defer ref.Close()
	upload := func(be backend.Backend, v []float32) backend.Tensor {
		x := be.Alloc(len(v))
		be.Upload(x, v)
		return x
	}
	download := func(be backend.Backend, x backend.Tensor) []float32 {
		v := make([]float32, x.Len())
		be.Download(v, x)
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		return v
	}
	near := func(what string, got, want []float32, tol float64) {
		t.Helper()
		for i := range want {
			if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= tol*(1+math.Abs(float64(want[i])))) {
				t.Errorf("%s[%d] = %g, want %g", what, i, got[i], want[i])
			}
		}
	}

	// The loss gradient is scaled.
	logits := []float32{0.5, -1, 2, 0.25, 0, 1, -0.5, 3, 1.5}
	labels := []float32{2, 0, 1}
	lossGrad := func(be backend.Backend) []float32 {
		x, l := upload(be, logits), upload(be, labels)
		lp, dx := be.Alloc(9), be.Alloc(9)
		be.LogSoftmax(lp, x, 3, 3)
		be.LogSoftmaxNLLBackward(dx, lp, l, 3, 3, 1.0/3)
		return download(be, dx)
	}
	want := lossGrad(ref)
	for i := range want {
		want[i] *= scale
	}
	near("scaled loss gradient", lossGrad(gpu), want, 1e-6)

	// Scaled gradients update as the CPU's true ones do.
	w0 := [][]float32{{0.5, -0.25, 1, 2}, {-1, 0.125, 3}}
	g0 := [][]float32{{0.1, -0.2, 0.3, 0.05}, {1e-3, -4, 0.5}}
	adam := backend.AdamParams{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-4}
	sgd := backend.SGDParams{LR: 0.1, Momentum: 0.9, WeightDecay: 1e-4}
	type param struct{ w, g, m, v backend.Tensor }
	params := func(be backend.Backend, gradScale float32) []param {
		var ps []param
		for i := range w0 {
			g := slices.Clone(g0[i])
			for j := range g {
				g[j] *= gradScale
			}
			ps = append(ps, param{upload(be, w0[i]), upload(be, g), be.Alloc(len(g)), be.Alloc(len(g))})
		}
		return ps
	}
	// step makes one update on be, the t-th there (Adam's step count).
	steps := map[backend.Backend]int{}
	step := func(be backend.Backend, ps []param, check bool) {
		steps[be]++
		adam.Step = steps[be]
		if check {
			for _, p := range ps {
				ls.CheckGradient(p.g, p.g.Len())
			}
		}
		be.AdamStep(ps[0].w, ps[0].g, ps[0].m, ps[0].v, ps[0].w.Len(), adam)
		be.SGDStep(ps[1].w, ps[1].g, ps[1].m, ps[1].w.Len(), sgd)
		if check {
			ls.EndStep()
		}
	}
	onGPU, onCPU := params(gpu, scale), params(ref, 1)
	step(gpu, onGPU, true)
	step(ref, onCPU, false)
	for i := range onGPU {
		near("updated weights", download(gpu, onGPU[i].w), download(ref, onCPU[i].w), 1e-6)
		near("optimizer state m", download(gpu, onGPU[i].m), download(ref, onCPU[i].m), 1e-6)
	}
	near("Adam's v", download(gpu, onGPU[0].v), download(ref, onCPU[0].v), 1e-6)
	if st := scalerState(t, ls, gpu); !slices.Equal(st, []float32{scale, 0, 1, 0}) {
		t.Errorf("state after a good step %v, want [%d 0 1 0]", st, scale)
	}

	// A non-finite gradient anywhere skips the whole step.
	for k, bad := range []float32{float32(math.Inf(1)), float32(math.NaN()), float32(math.Inf(-1))} {
		gpu.Upload(onGPU[1].g, []float32{1, bad, 2})
		before := make([][]float32, 0, 6)
		for _, p := range onGPU {
			before = append(before, download(gpu, p.w), download(gpu, p.m), download(gpu, p.v))
		}
		stBefore := scalerState(t, ls, gpu)
		step(gpu, onGPU, true)
		var after [][]float32
		for _, p := range onGPU {
			after = append(after, download(gpu, p.w), download(gpu, p.m), download(gpu, p.v))
		}
		for i := range before {
			if !slices.Equal(before[i], after[i]) {
				t.Errorf("gradient %g: a skipped step changed tensor %d: %v → %v", bad, i, before[i], after[i])
			}
		}
		wantSt := []float32{stBefore[0] / 2, 0, 0, float32(k + 1)}
		if st := scalerState(t, ls, gpu); !slices.Equal(st, wantSt) {
			t.Errorf("gradient %g: state %v after a skipped step, want %v", bad, st, wantSt)
		}
	}

	// The next good step is Adam's second applied one: its bias
	// corrections count the three skipped steps out, as PyTorch's
	// GradScaler does by not calling them.
	now := scalerState(t, ls, gpu)[backend.LossScale] // halved by each skip
	for i := range onGPU {
		g := download(ref, onCPU[i].g)
		for j := range g {
			g[j] *= now
		}
		gpu.Upload(onGPU[i].g, g)
	}
	step(gpu, onGPU, true)
	step(ref, onCPU, false)
	if steps[gpu] != 5 || steps[ref] != 2 {
		t.Fatalf("%d steps on the GPU and %d on the CPU, want 5 and 2", steps[gpu], steps[ref])
	}
	for i := range onGPU {
		near("weights after skipped steps", download(gpu, onGPU[i].w), download(ref, onCPU[i].w), 1e-6)
		near("moments after skipped steps", download(gpu, onGPU[i].m), download(ref, onCPU[i].m), 1e-6)
	}

	// Growth after the interval, and the limits of the scale.
	gpu.Upload(onGPU[1].g, []float32{1, 2, 3})
	for _, c := range []struct {
		name        string
		state, want []float32
		bad         bool
	}{
		{"one step short of the interval", []float32{1024, 0, backend.LossScaleGrowthInterval - 2, 5}, []float32{1024, 0, backend.LossScaleGrowthInterval - 1, 5}, false},
		{"the interval's last step", []float32{1024, 0, backend.LossScaleGrowthInterval - 1, 5}, []float32{2048, 0, 0, 5}, false},
		{"doubling past float32", []float32{0x1p127, 0, backend.LossScaleGrowthInterval - 1, 0}, []float32{0x1p127, 0, 0, 0}, false},
		{"halving below float32's normal range", []float32{0x1p-126, 0, 7, 0}, []float32{0x1p-126, 0, 0, 1}, true},
	} {
		gpu.Upload(ls.LossScaleState(), c.state)
		if c.bad {
			gpu.Upload(onGPU[0].g, []float32{0, 0, float32(math.Inf(1)), 0})
		}
		step(gpu, onGPU, true)
		if st := scalerState(t, ls, gpu); !slices.Equal(st, c.want) {
			t.Errorf("%s: state %v, want %v", c.name, st, c.want)
		}
	}

	// The state is the backend's: Free leaves it.
	gpu.Free(ls.LossScaleState())
	gpu.Upload(ls.LossScaleState(), []float32{8, 0, 0, 0})
	ls.EndStep()
	if st := scalerState(t, ls, gpu); !slices.Equal(st, []float32{8, 0, 1, 0}) {
		t.Errorf("after Free: state %v, want [8 0 1 0]", st)
	}
}

// A GEMM operand beyond fp16's range becomes Inf, which the scaler
// catches: the chain that makes a too-large scale skip a step.
func TestFP16OverflowIsCaught(t *testing.T) {
	gpu := openGPU(t, cuda.Options{Precision: cuda.FP16}, false)
	defer gpu.Close()
	ls := gpu.(backend.LossScaler)
	a, b, c := gpu.Alloc(4), gpu.Alloc(2), gpu.Alloc(2)
	gpu.Upload(a, []float32{1, 2, 3, 7e4}) // 7e4 > 65504
	gpu.Upload(b, []float32{1, 1})
	gpu.Gemm(false, false, 2, 1, 2, 1, a, b, 0, c)
	ls.CheckGradient(c, 2)
	ls.EndStep()
	if st := scalerState(t, ls, gpu); st[backend.LossScaleSkipped] != 1 || st[backend.LossScale] != backend.LossScaleInitial/2 {
		t.Errorf("state %v after a GEMM of an operand beyond fp16's range, want the step skipped", st)
	}
}

// keepLossScale is a CUDA backend that reads the scaler's state when it
// closes and, where start is set, sets the scale to start just before the
// first loss gradient (after the optimizer has set the initial state).
type keepLossScale struct {
	*cuda.Backend
	start, state []float32
}

func (k *keepLossScale) LogSoftmaxNLLBackward(dx, logp, labels backend.Tensor, rows, cols int, scale float32) {
	if k.start != nil {
		k.Upload(k.LossScaleState(), k.start)
		k.start = nil
	}
	k.Backend.LogSoftmaxNLLBackward(dx, logp, labels, rows, cols, scale)
}

func (k *keepLossScale) Close() error {
	k.state = make([]float32, backend.LossScaleStateLen)
	k.Download(k.state, k.LossScaleState())
	return k.Backend.Close()
}

// Training in fp16 tracks training in fp32 on the same GPU within
// TestBF16TrainingTracksFP32's bounds (binary nets up to the step where
// their training turns chaotic, fp32Reference), with no step skipped at
// the initial scale; so does training with the activations stored as
// fp16 (layout auto at fp16, and nhwc-fp16), whose gradients between
// convolutions carry the scale in fp16, where layout nhwc keeps them
// float32 (plain fp16). In ResNet-20 that storage must change the losses
// against plain fp16 (its residual sums are rounded to fp16 again). With the
// scale started far too high, the first steps overflow and are skipped,
// the scale halves until the gradients fit, and training goes on.
func TestFP16TrainingTracksFP32(t *testing.T) {
	models := map[string]trainer.BenchModel{}
	for _, m := range trainer.BenchModels() {
		models[m.Name] = m
	}
	plain := map[string][]float64{}    // layout nhwc's losses, by model and mode
	refs := map[string]fp32Reference{} // by model and mode
	for _, c := range []struct {
		model, mode string
		steps       int
		layout      string
	}{
		{"mlp300", "float", 30, cuda.LayoutAuto},
		{"mlp300", "binary", 30, cuda.LayoutAuto},
		{"resnet20", "float", 4, cuda.NHWC},
		{"resnet20", "binary", 4, cuda.NHWC},
		{"resnet20", "float", 4, cuda.LayoutAuto},
		{"resnet20", "binary", 4, cuda.NHWCFP16},
		// No plain run to compare with: in VGG-5 fp16 storage may give
		// plain fp16's losses (TestBF16TrainingTracksFP32 says why).
		{"vgg5", "float", 4, cuda.NHWCFP16},
	} {
		key := c.model + " " + c.mode
		t.Run(key+" "+c.layout, func(t *testing.T) {
			got := checkFP16Tracks(t, models[c.model], c.mode, c.layout, c.steps, refs)
			if c.layout == cuda.NHWC {
				plain[key] = got
			} else if p, ok := plain[key]; ok && slices.Equal(p, got) {
				t.Errorf("layout %s gives the losses of layout nhwc bit for bit; fp16 storage did not run", c.layout)
			}
		})
	}
	t.Run("scale too high", func(t *testing.T) { checkFP16Recovers(t, models["mlp300"]) })
}

// checkFP16Tracks checks steps fp16 training steps of m in mode, with
// activations in layout, against fp32 (fp32ReferenceFor, remembered in
// refs by model and mode), checks that none was skipped, and returns the
// fp16 losses. It skips the test where layout needs cuDNN and cuDNN does
// not run.
func checkFP16Tracks(t *testing.T, m trainer.BenchModel, mode, layout string, steps int, refs map[string]fp32Reference) []float64 {
	key := m.Name + " " + mode
	ref, ok := refs[key]
	if !ok {
		ref = fp32ReferenceFor(t, m, mode, steps, fp16Format)
		refs[key] = ref
	}
	var kept *keepLossScale
	keep := func(be backend.Backend) backend.Backend {
		kept = &keepLossScale{Backend: be.(*cuda.Backend)}
		return kept
	}
	got, name, err := trainer.StepLossesWrapped(m, mode, "cuda", cuda.FP16, layout, steps, keep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(name, "precision fp16") {
		t.Fatalf("the fp16 run's backend is %q", name)
	}
	if layout != cuda.NHWC && !cudnnInUse.MatchString(name) {
		t.Skipf("fp16 activations need cuDNN: %s", name)
	}
	// Every layout but nhwc stores fp16 activations.
	if stored := strings.Contains(name, "fp16 activations"); stored != (layout != cuda.NHWC) {
		t.Fatalf("the fp16 run in layout %s has backend %q", layout, name)
	}
	ref.check(t, fmt.Sprintf("%s %s, layout %s", m.Name, mode, layout), fp16Format, got)
	if st := kept.state; st[backend.LossScale] != backend.LossScaleInitial || st[backend.LossScaleSkipped] != 0 || st[backend.LossScaleGood] != float32(steps) {
		t.Errorf("%s %s: loss scaler state %v after %d steps, want no step skipped", m.Name, mode, st, steps)
	}
	return got
}

// checkFP16Recovers trains the MLP m in fp16 from a loss scale of 2³⁰, at
// which its output gradients (the scale times about 1/batch) overflow
// fp16: steps are skipped, each halving the scale, until it fits; after
// that the scale may still overflow now and then, and training goes on.
// The optimizer is Adam, whose update hardly changes when the gradients
// are scaled: TestLossScaling checks the unscaling itself, with SGD too.
func checkFP16Recovers(t *testing.T, m trainer.BenchModel) {
	const start, steps = 0x1p30, 30
	var kept *keepLossScale
	tooHigh := func(be backend.Backend) backend.Backend {
		kept = &keepLossScale{Backend: be.(*cuda.Backend), start: []float32{start, 0, 0, 0}}
		return kept
	}
	got, _, err := trainer.StepLossesWrapped(m, "float", "cuda", cuda.FP16, cuda.LayoutAuto, steps, tooHigh)
	if err != nil {
		t.Fatal(err)
	}
	st := kept.state
	skipped, good := int(st[backend.LossScaleSkipped]), int(st[backend.LossScaleGood])
	if skipped < 1 || skipped > 20 || st[backend.LossScale] != float32(math.Ldexp(start, -skipped)) || good < 1 || good > steps-skipped {
		t.Fatalf("state %v after %d steps, want some skipped, the scale halved for each, and good steps since the last", st, steps)
	}
	// Training goes on and stays sane: a skipped step that applied its Inf
	// or NaN gradients would send the loss to NaN or far above where it
	// started. (How far it falls in 30 steps on this synthetic data is too
	// little to test.)
	for i, l := range got {
		if math.IsNaN(l) || math.IsInf(l, 0) || l > 1.5*got[0] {
			t.Fatalf("step %d: loss %v, the first %v; losses %.4f", i, l, got[0], got)
		}
	}
	t.Logf("%d steps skipped, scale now %g, %d good steps since the last skip; losses %.4f", skipped, st[backend.LossScale], good, got)
}
