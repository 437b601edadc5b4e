//go:build cuda

package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
	"iterbin/cuda"
)

// A small network's forward and backward pass with channels-last on (in
// TF32, where cuDNN's NHWC kernels certainly run): every tensor ends in
// the order layout.go says (NHWC inside the convolutional part, flat
// where a dense layer reads it, NHWC again for its gradient), and every
// value Download returns is the CPU's, within TF32's rounding (a wrong
// index errs by the values themselves, of order 1).
func TestChannelsLastFlow(t *testing.T) {
	nhwc := func(n, c, s int) string { return fmt.Sprintf("NHWC %d×%d×%d", n, c, s) }
	checkFlow(t, cuda.Options{Layout: cuda.NHWC, Precision: cuda.TF32}, 2e-2, nil, map[string]string{
		"x": nhwc(4, 8, 36), "w": nhwc(16, 8, 9), "y": nhwc(4, 16, 36), "a": nhwc(4, 16, 36), "arg": nhwc(4, 16, 9),
		"p": "flat", "logits": "flat", "dp": nhwc(4, 16, 9), "da": nhwc(4, 16, 36), "dyConv": nhwc(4, 16, 36),
		"dw": nhwc(16, 8, 9), "dx": nhwc(4, 8, 36), "buf": nhwc(16, 8, 9), "g": "flat", "dgap": nhwc(4, 16, 36),
	})
}

// The same network with 16-bit storage (layouts nhwc-bf16 and nhwc-fp16):
// the convolutions' outputs, and what batch norm, pooling and global
// average pooling's backward pass compute from 16-bit inputs, are stored
// in 16 bits; the input batch, filters and their gradients stay float32;
// the gradient that comes back from the dense layer is float32, so the
// ops it meets run in float32 and widen their 16-bit inputs (y) in place,
// up to the next convolution, which writes 16 bits again (dx). The inputs
// are values of the format, and the CPU rounds what the GPU stores in 16
// bits where it stores it, so that both take the same max-pooling
// arg-maxes (two values a rounding apart in a window would otherwise pick
// different ones); the tolerance is bf16's, whose unit roundoff is 8
// times TF32's (fp16's is TF32's).
func TestHalfStorageFlow(t *testing.T) {
	for _, f := range []halfFormat{bf16Format, fp16Format} {
		t.Run(f.precision, func(t *testing.T) {
			nhwc := func(n, c, s int) string { return fmt.Sprintf("NHWC %d×%d×%d", n, c, s) }
			half := func(n, c, s int) string { return fmt.Sprintf("NHWC %s %d×%d×%d", f.precision, n, c, s) }
			checkFlow(t, cuda.Options{Layout: storageLayout(f), Precision: f.precision}, 0.15, f.round, map[string]string{
				"x": nhwc(4, 8, 36), "w": nhwc(16, 8, 9), "y": nhwc(4, 16, 36), "a": half(4, 16, 36), "arg": nhwc(4, 16, 9),
				"p": "flat", "logits": "flat", "dp": nhwc(4, 16, 9), "da": nhwc(4, 16, 36), "dyConv": nhwc(4, 16, 36),
				"dw": nhwc(16, 8, 9), "dx": half(4, 8, 36), "buf": nhwc(16, 8, 9), "g": "flat", "dgap": half(4, 16, 36),
			})
		})
	}
}

// checkFlow runs the network of TestChannelsLastFlow on a GPU backend
// with opts and on the CPU, then checks the layout of every tensor and,
// within tol, every value. Where round is set, the inputs are rounded with
// it first, and the CPU rounds the tensors that the layouts say the GPU
// stores in 16 bits after the op that writes them.
func checkFlow(t *testing.T, opts cuda.Options, tol float64, round func(float32) float32, layouts map[string]string) {
	t.Helper()
	gpu := openGPU(t, opts, true)
	defer gpu.Close()
	ref := cpu.New()
	defer ref.Close()
	conv := backend.ConvShape{N: 4, C: 8, H: 6, W: 6, OC: 16, KH: 3, KW: 3, Stride: 1, Pad: 1}
	bn := backend.BNShape{N: 4, C: 16, Spatial: 36}
	pool := backend.PoolShape{N: 4, C: 16, H: 6, W: 6, Kernel: 2, Stride: 2}
	const classes, pooled = 10, 16 * 9
	sizes := map[string]int{
		"x": 4 * 8 * 36, "w": 16 * 8 * 9, "fcW": classes * pooled, "dLogits": 4 * classes, "gamma": 16, "beta": 16,
		"y": 4 * 16 * 36, "a": 4 * 16 * 36, "mean": 16, "inv": 16, "rm": 16, "rv": 16, "p": 4 * pooled, "arg": 4 * pooled,
		"logits": 4 * classes, "dp": 4 * pooled, "da": 4 * 16 * 36, "dyConv": 4 * 16 * 36, "dGamma": 16, "dBeta": 16,
		"dw": 16 * 8 * 9, "dx": 4 * 8 * 36, "buf": 16 * 8 * 9, "g": 4 * 16, "dgap": 4 * 16 * 36,
	}
	rng := rand.New(rand.NewPCG(5, 9))
	inputs := map[string][]float32{}
	for _, name := range []string{"x", "w", "fcW", "dLogits", "gamma", "beta"} {
		v := make([]float32, sizes[name])
		for i := range v {
			v[i] = float32(rng.NormFloat64())
			if round != nil {
				v[i] = round(v[i])
			}
		}
		inputs[name] = v
	}
	run := func(b backend.Backend) map[string]backend.Tensor {
		ts := map[string]backend.Tensor{}
		for name, n := range sizes {
			ts[name] = b.Alloc(n)
			if v, ok := inputs[name]; ok {
				b.Upload(ts[name], v)
			}
		}
		f := b.(backend.Fused)
		// stored rounds, on the CPU, what the GPU stores in 16 bits.
		stored := func(name string) {
			if round != nil {
				roundOnCPU(b, ts[name], sizes[name], round)
			}
		}
		b.Fill(ts["rv"], 1, 16)
		b.Conv2DForward(ts["y"], ts["x"], ts["w"], conv)
		stored("y")
		f.BatchNormReLUTrain(ts["a"], ts["mean"], ts["inv"], ts["rm"], ts["rv"], ts["y"], ts["gamma"], ts["beta"], bn, 0.1, 1e-5)
		stored("a")
		b.MaxPool2DForward(ts["p"], ts["arg"], ts["a"], pool)
		stored("p")
		b.Gemm(false, true, 4, classes, pooled, 1, ts["p"], ts["fcW"], 0, ts["logits"])
		b.Gemm(false, false, 4, pooled, classes, 1, ts["dLogits"], ts["fcW"], 0, ts["dp"])
		b.MaxPool2DBackward(ts["da"], ts["dp"], ts["arg"], pool)
		f.BatchNormReLUBackward(ts["dyConv"], ts["dGamma"], ts["dBeta"], ts["da"], ts["y"], ts["mean"], ts["inv"], ts["gamma"], ts["beta"], bn)
		b.Conv2DBackwardFilter(ts["dw"], ts["dyConv"], ts["x"], conv)
		b.Conv2DBackwardData(ts["dx"], ts["dyConv"], ts["w"], conv)
		stored("dx")
		if ls, ok := b.(backend.LossScaler); ok && ls.ScalesLoss() {
			// dLogits came in unscaled: the step divides by a scale of 1.
			b.Upload(ls.LossScaleState(), []float32{1, 0, 0, 0})
		}
		b.SGDStep(ts["w"], ts["dw"], ts["buf"], sizes["w"], backend.SGDParams{LR: 0.1, Momentum: 0.9})
		b.GlobalAvgPoolForward(ts["g"], ts["a"], 4, 16, 36)
		b.GlobalAvgPoolBackward(ts["dgap"], ts["g"], 4, 16, 36)
		stored("dgap")
		return ts
	}
	got, want := run(gpu), run(ref)
	for name, layout := range layouts {
		if l := cuda.TensorLayout(got[name]); l != layout {
			t.Errorf("%s is stored %s, want %s", name, l, layout)
		}
	}
	for name, n := range sizes {
		g, w := make([]float32, n), make([]float32, n)
		gpu.Download(g, got[name])
		ref.Download(w, want[name])
		if err := gpu.Sync(); err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for i := range w {
			e := math.Abs(float64(g[i])-float64(w[i])) / (1 + math.Abs(float64(w[i])))
			if math.IsNaN(e) {
				e = math.Inf(1)
			}
			worst = math.Max(worst, e)
		}
		if worst > tol {
			t.Errorf("%s: the GPU's values differ from the CPU's by up to %.3g (relative to 1+|value|, tolerance %.3g)", name, worst, tol)
		} else {
			t.Logf("%s: largest difference from the CPU %.3g", name, worst)
		}
		if l := cuda.TensorLayout(got[name]); l != "flat" {
			t.Errorf("%s is stored %s after Download, want flat", name, l)
		}
	}
	for name := range sizes {
		gpu.Free(got[name])
		ref.Free(want[name])
	}
}
