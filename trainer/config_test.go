package trainer

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeTOML(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "exp.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigErrorsNameFileKeyAndWhatIsAllowed(t *testing.T) {
	cases := []struct {
		name, toml string
		want       []string
	}{
		{"unknown key with suggestion", "[train]\nlearning_rate = 0.1\n", []string{`unknown key "train.learning_rate"`, "keys allowed in [train]", "lr"}},
		{"typo", "[train]\nepoch = 3\n", []string{`"train.epoch"`, `did you mean "epochs"`}},
		{"unknown section", "[trian]\nlr = 1\n", []string{`unknown key "trian"`, `did you mean "train"`, "Keys allowed in top level"}},
		{"wrong type", "[train]\nlr = \"fast\"\n", []string{"line 2", "train.lr", "type string", "float"}},
		{"bad value", "[train]\noptimizer = \"adm\"\n", []string{"key train.optimizer", `"adm" is not allowed`, "adam, sgd"}},
		{"bad order", "[binarize]\norder = \"sideways\"\n", []string{"key binarize.order", "guided-reverse"}},
		{"order of numbers", "[binarize]\norder = [1, 3, 2]\n", []string{"binarize.order", "not a layer name"}},
		{"syntax", "[train\nlr = 1\n", []string{":2:", "table name"}},
		{"several", "[train]\nepochs = 0\nbatch_size = 1\n", []string{"train.epochs", "train.batch_size"}},
		{"device", "[run]\ndevice = \"gpu\"\n", []string{"run.device", "cuda:N"}},
		{"multistep without milestones", "[train]\nlr_schedule = \"multistep\"\n", []string{"train.milestones"}},
		{"unknown precision", "[run]\ndevice = \"cuda\"\nprecision = \"fp64\"\n", []string{"key run.precision", `"fp64" is not allowed`, "fp32, tf32, bf16, fp16"}},
		{"fp16 on the CPU", "[run]\nprecision = \"fp16\"\n", []string{"key run.precision", `"fp16" is a CUDA option`, "loss scaling"}},
		{"bf16 storage at fp16", "[run]\ndevice = \"cuda\"\nprecision = \"fp16\"\nlayout = \"nhwc-bf16\"\n", []string{"key run.layout", `run.precision = "bf16" (not "fp16")`}},
		{"bf16 on the CPU", "[run]\nprecision = \"bf16\"\n", []string{"key run.precision", `"bf16" is a CUDA option`, "computes in fp32"}},
		{"tf32 on the CPU", "[run]\nprecision = \"tf32\"\n", []string{"key run.precision", `"tf32" is a CUDA option`}},
		{"old tf32 key", "[run]\ndevice = \"cuda\"\ntf32 = true\n", []string{"key run.tf32", `precision = "tf32"`}},
		{"precision typo", "[run]\nprecison = \"bf16\"\n", []string{`unknown key "run.precison"`, `did you mean "precision"`}},
		{"unknown layout", "[run]\ndevice = \"cuda\"\nlayout = \"chw\"\n", []string{"key run.layout", `"chw" is not allowed`, "auto, nhwc, nchw, nhwc-bf16 (precision bf16), nhwc-fp16 (precision fp16)"}},
		{"fp16 storage at bf16", "[run]\ndevice = \"cuda\"\nprecision = \"bf16\"\nlayout = \"nhwc-fp16\"\n", []string{"key run.layout", `"nhwc-fp16" stores activations as fp16`, `run.precision = "fp16" (not "bf16")`}},
		{"fp16 storage on the CPU", "[run]\nprecision = \"fp32\"\nlayout = \"nhwc-fp16\"\n", []string{"key run.layout", `"nhwc-fp16" is a CUDA option`}},
		{"bf16 storage at fp32", "[run]\ndevice = \"cuda\"\nlayout = \"nhwc-bf16\"\n", []string{"key run.layout", `"nhwc-bf16" stores activations as bf16`, `run.precision = "bf16" (not "fp32")`}},
		{"bf16 storage on the CPU", "[run]\nprecision = \"fp32\"\nlayout = \"nhwc-bf16\"\n", []string{"key run.layout", `"nhwc-bf16" is a CUDA option`}},
		{"nhwc on the CPU", "[run]\nlayout = \"nhwc\"\n", []string{"key run.layout", `"nhwc" is a CUDA option`, "computes NCHW"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeTOML(t, c.toml)
			_, err := LoadConfig(p, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestConfigDefaultsOverridesAndExplicitOrder(t *testing.T) {
	p := writeTOML(t, `
[run]
name = "x"
[binarize]
order = ["fc1", "fc3", "fc2"]
[train]
lr = 0.5
`)
	cfg, err := LoadConfig(p, []string{"train.epochs=7", "binarize.mode=binary", "data.dir=/some/path", "train.milestones=[2, 4]"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Train.Epochs != 7 || cfg.Binarize.Mode != "binary" || cfg.Data.Dir != "/some/path" || cfg.Train.LR != 0.5 {
		t.Errorf("overrides not applied: %+v", cfg.Train)
	}
	if !reflect.DeepEqual(cfg.Train.Milestones, []int{2, 4}) {
		t.Errorf("milestones %v", cfg.Train.Milestones)
	}
	if !reflect.DeepEqual(cfg.Binarize.Order.Layers, []string{"fc1", "fc3", "fc2"}) {
		t.Errorf("order %+v", cfg.Binarize.Order)
	}
	// Untouched keys keep their defaults.
	if cfg.Train.BatchSize != 100 || cfg.Run.Seed != 316 || cfg.Binarize.EpochsPerLayer != 150 {
		t.Errorf("defaults lost: %+v", cfg)
	}
	// The resolved config encodes and decodes to itself.
	text, err := cfg.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := LoadConfig(writeTOML(t, string(text)), nil)
	if err != nil {
		t.Fatalf("resolved config does not load: %v\n%s", err, text)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("round trip changed the config:\n%+v\n%+v", back, cfg)
	}
}

// run.precision: fp32 by default; tf32 and bf16 on CUDA, also by -set;
// tf32 = false, which configurations written before run.precision carry,
// still loads, and is not written again.
func TestConfigPrecision(t *testing.T) {
	cfg, err := LoadConfig(writeTOML(t, "[run]\nname = \"x\"\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Run.Precision != "fp32" {
		t.Errorf("default precision %q", cfg.Run.Precision)
	}
	for _, p := range []string{"fp32", "tf32", "bf16"} {
		cfg, err := LoadConfig(writeTOML(t, "[run]\ndevice = \"cuda:1\"\nprecision = \""+p+"\"\n"), nil)
		if err != nil || cfg.Run.Precision != p {
			t.Errorf("precision %s on cuda:1: %v", p, err)
		}
	}
	cfg, err = LoadConfig(writeTOML(t, "[run]\ndevice = \"cuda\"\ntf32 = false\n"), []string{"run.precision=bf16"})
	if err != nil || cfg.Run.Precision != "bf16" {
		t.Fatalf("tf32 = false and -set run.precision=bf16: %v", err)
	}
	text, err := cfg.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), `precision = "bf16"`) || strings.Contains(string(text), "tf32") {
		t.Errorf("encoded config:\n%s", text)
	}
	if _, err := LoadConfig(writeTOML(t, "[run]\nprecison = 1\n"), nil); err == nil || strings.Contains(err.Error(), "omitempty") {
		t.Errorf("the allowed keys name a tag option: %v", err)
	}
}

func TestSetErrors(t *testing.T) {
	p := writeTOML(t, "")
	for _, c := range []struct{ set, want string }{
		{"train.lrr=1", `unknown key "train.lrr"`},
		{"nonsense", "expected section.key=value"},
		{"train.epochs=many", "train.epochs"},
		{"train.epochs=-1", "key train.epochs"},
	} {
		_, err := LoadConfig(p, []string{c.set})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("-set %s: error %v, want %q", c.set, err, c.want)
		}
	}
}

func TestLRSchedules(t *testing.T) {
	s := ScheduleConfig{LRSchedule: "multistep", Milestones: []int{2, 4}, Gamma: 0.1}
	want := []float64{1, 1, 0.1, 0.1, 0.01, 0.01}
	for e, w := range want {
		if got := s.LRAt(1, e, 6); abs(got-w) > 1e-12 {
			t.Errorf("epoch %d: lr %v, want %v", e, got, w)
		}
	}
	if got := (ScheduleConfig{LRSchedule: "constant", Milestones: []int{1}, Gamma: 0.1}).LRAt(0.5, 9, 10); got != 0.5 {
		t.Errorf("constant lr %v", got)
	}
	cos := ScheduleConfig{LRSchedule: "cosine"}
	for e, w := range map[int]float64{0: 0.1, 2: 0.05, 4: 0} {
		if got := cos.LRAt(0.1, e, 4); abs(got-w) > 1e-12 {
			t.Errorf("cosine epoch %d of 4: lr %v, want %v", e, got, w)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestSensitivityFingerprintIgnoresOrderAndBudget(t *testing.T) {
	a, b := Default(), Default()
	b.Binarize.Order = Order{Rule: OrderGuidedReverse}
	b.Train.Epochs = 3
	b.Run.Name = "other"
	if a.SensitivityFingerprint() != b.SensitivityFingerprint() {
		t.Error("order, budget or name changed the fingerprint")
	}
	b.Train.LR = 0.01
	if a.SensitivityFingerprint() == b.SensitivityFingerprint() {
		t.Error("the learning rate did not change the fingerprint")
	}
	// fp32, written or not, has one fingerprint (the field is then left
	// out, as before precisions existed); tf32 and bf16 round, so each
	// has its own.
	c, d := Default(), Default()
	c.Run.Precision, d.Run.Precision = "", "fp32"
	if c.SensitivityFingerprint() != d.SensitivityFingerprint() {
		t.Error(`precision "" and "fp32" have different fingerprints`)
	}
	seen := map[string]string{c.SensitivityFingerprint(): "fp32"}
	for _, p := range []string{"tf32", "bf16"} {
		d.Run.Precision = p
		if other, ok := seen[d.SensitivityFingerprint()]; ok {
			t.Errorf("%s has the fingerprint of %s", p, other)
		}
		seen[d.SensitivityFingerprint()] = p
	}
}

func TestProgressPlainLinesOffTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := NewProgress(f)
	if p.terminal || p.due() {
		t.Fatal("a file got a terminal bar, or a line before a minute passed")
	}
	p.last = p.last.Add(-2 * p.every)
	if !p.due() {
		t.Fatal("no line after a minute")
	}
	p.step(3, 10, 500, 1000, 0.25, 10*1e9)
	p.clear()
	data, _ := os.ReadFile(f.Name())
	if got := string(data); !strings.Contains(got, "epoch 3/10: 500/1000 images (50%), loss 0.2500, 50 img/s, eta 10s\n") {
		t.Errorf("progress line %q", got)
	}
}

// run.layout: auto by default; nchw anywhere, nhwc on CUDA, nhwc-bf16 and
// nhwc-fp16 on CUDA at precision bf16 and fp16, also by -set.
func TestConfigLayout(t *testing.T) {
	cfg, err := LoadConfig(writeTOML(t, "[run]\nname = \"x\"\n"), nil)
	if err != nil || cfg.Run.Layout != "auto" {
		t.Fatalf("default layout %q: %v", cfg.Run.Layout, err)
	}
	for _, c := range []struct{ device, precision, layout string }{{"cpu", "fp32", "nchw"}, {"cpu", "fp32", "auto"}, {"cuda", "fp32", "nhwc"},
		{"cuda:1", "fp32", "nchw"}, {"cuda", "bf16", "nhwc-bf16"}, {"cuda", "fp16", "nhwc-fp16"}} {
		cfg, err := LoadConfig(writeTOML(t, "[run]\ndevice = \""+c.device+"\"\nprecision = \""+c.precision+"\"\n"), []string{"run.layout=" + c.layout})
		if err != nil || cfg.Run.Layout != c.layout {
			t.Errorf("layout %s on %s: %v", c.layout, c.device, err)
		}
	}
}
