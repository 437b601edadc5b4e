package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"iterbin/backend"
	"iterbin/trainer"
)

func runCLI(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String() + errOut.String(), err
}

// Every shipped experiment must validate, explicit orders included.
func TestEveryExperimentFileValidates(t *testing.T) {
	files, _ := filepath.Glob("../../experiments/*/*.toml")
	more, _ := filepath.Glob("../../experiments/*/*/*.toml")
	files = append(files, more...)
	if len(files) < 20 {
		t.Fatalf("found only %d experiment files", len(files))
	}
	for _, f := range files {
		if out, err := runCLI("validate", f); err != nil || !strings.Contains(out, "is valid") {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
}

func TestLayersListsNamesAndSizes(t *testing.T) {
	out, err := runCLI("layers", "../../experiments/mnist/mlp-784-784/forward.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fc1", "[784 784]", "614656", "fc3", "[10 784]", "1237152"} {
		if !strings.Contains(out, want) {
			t.Errorf("layers output lacks %q:\n%s", want, out)
		}
	}
}

func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[binarize]\norder = [\"fc1\", \"fc9\", \"fc2\"]\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"validate", bad}, "fc9"},
		{[]string{"validate", filepath.Join(dir, "missing.toml")}, "missing.toml"},
		{[]string{"validate"}, "exactly one FILE.toml"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"run", "--resume", dir, "x.toml"}, "only the run folder"},
		{[]string{"run", "--resume", dir}, "config.toml"},
		{[]string{"run", "../../experiments/mnist/quick-forward.toml", "-set", "run.device=cuda"}, "built without CUDA support"},
		{[]string{"download", "imagenet", dir}, "usage"},
	} {
		out, err := runCLI(c.args...)
		if err == nil || !strings.Contains(err.Error()+out, c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
	if out, err := runCLI("help"); err != nil || !strings.Contains(out, "iterbin run FILE.toml") {
		t.Errorf("help: %v %s", err, out)
	}
}

func TestSetFlagsAfterTheFile(t *testing.T) {
	out, err := runCLI("validate", "../../experiments/mnist/quick-forward.toml", "-set", "train.lr=0.25", "-set", "binarize.order=reverse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "lr = 0.25") || !strings.Contains(out, `order = "reverse"`) {
		t.Errorf("overrides missing from the resolved config:\n%s", out)
	}
}

func TestBenchPrintsATable(t *testing.T) {
	out, err := runCLI("bench", "--models", "mlp300", "--modes", "binary", "--steps", "2", "--warmup", "1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"iterbin backend: cpu float32", "iterbin img/s", "mlp300", "binary", "PyTorch: not measured"} {
		if !strings.Contains(out, want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
	if _, err := runCLI("bench", "--models", "alexnet"); err == nil || !strings.Contains(err.Error(), "unknown model") {
		t.Errorf("unknown model: %v", err)
	}
	if _, err := runCLI("bench", "--models", "mlp300", "--precision", "tf32", "--steps", "1"); err == nil || !strings.Contains(err.Error(), "CUDA option") {
		t.Errorf("tf32 on the CPU: %v", err)
	}
	if _, err := runCLI("bench", "--models", "mlp300", "--precision", "bf16", "--steps", "1"); err == nil || !strings.Contains(err.Error(), "CUDA option") {
		t.Errorf("bf16 on the CPU: %v", err)
	}
	if _, err := runCLI("bench", "--models", "mlp300", "--precision", "fp16", "--steps", "1"); err == nil || !strings.Contains(err.Error(), "CUDA option (fp16 GEMM") {
		t.Errorf("fp16 on the CPU: %v", err)
	}
	if _, err := runCLI("bench", "--models", "mlp300", "--precision", "fp64", "--steps", "1"); err == nil || !strings.Contains(err.Error(), "fp32, tf32, bf16, fp16") {
		t.Errorf("fp64: %v", err)
	}
}

// The profile prints its table, then, where the backend lists how its
// convolutions run, each choice under the op's label.
func TestProfilePrintsConvChoices(t *testing.T) {
	p := trainer.StepProfile{Model: "resnet20", Mode: "float", Precision: "tf32", Backend: "test", Steps: 2,
		Ops:         []backend.OpTime{{Op: "Conv2DForward n8 16→16 32x32 k3x3 s1", Calls: 4, Total: 2 * time.Millisecond}},
		ConvChoices: []backend.ConvChoice{{Op: "Conv2DForward n8 16→16 32x32 k3x3 s1", How: "NHWC, cuDNN algorithm 1 (IMPLICIT_PRECOMP_GEMM)"}}}
	var out strings.Builder
	printProfile(&out, p)
	for _, want := range []string{"1.000 ms a step", "Conv2DForward n8 16→16 32x32 k3x3 s1  2           1.000    100.0%",
		"how each convolution runs:\nConv2DForward n8 16→16 32x32 k3x3 s1  NHWC, cuDNN algorithm 1 (IMPLICIT_PRECOMP_GEMM)\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("profile output lacks %q:\n%s", want, out.String())
		}
	}
	p.ConvChoices = nil
	out.Reset()
	printProfile(&out, p)
	if strings.Contains(out.String(), "how each convolution runs") {
		t.Errorf("a profile without choices lists them:\n%s", out.String())
	}
	// Ops timed on the device: the header says so and gives the wall
	// clock's step beside the table's.
	p.DeviceTimes, p.Wall = true, 3*time.Millisecond
	out.Reset()
	printProfile(&out, p)
	if want := "1.000 ms a step in the table (each op's time on the device, from events around it, read at the step's end; host stages by the wall clock), 1.500 ms a step by the wall clock"; !strings.Contains(out.String(), want) {
		t.Errorf("device-timed profile output lacks %q:\n%s", want, out.String())
	}
}

func TestSummaryAndModelFileCommands(t *testing.T) {
	out, err := runCLI("summary", "../../experiments/mnist/mlp-300-100/forward.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fc1", "[300 784]", "28.7 KiB (29400 B)", "compression        25.7×", "100.00%"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"export", "somewhere"}, "usage: iterbin export"},
		{[]string{"export", t.TempDir(), "-o", filepath.Join(t.TempDir(), "m")}, "config.toml"},
		{[]string{"eval"}, "usage: iterbin eval"},
		{[]string{"eval", "../../README.md"}, "not an iterbin model"},
		{[]string{"report"}, "no run folders"},
		{[]string{"summary"}, "usage: iterbin summary"},
	} {
		out, err := runCLI(c.args...)
		if err == nil || !strings.Contains(err.Error()+out, c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}

func TestMedianByTakesTheMiddleFigure(t *testing.T) {
	id := func(v float64) float64 { return v }
	if got := medianBy([]float64{3, 1, 2}, id); got != 2 {
		t.Errorf("median of 3, 1, 2 = %v, want 2", got)
	}
	if got := medianBy([]float64{4, 1, 3, 2}, id); got != 2 {
		t.Errorf("median of 4, 1, 3, 2 = %v, want the lower middle 2", got)
	}
}
