package trainer

import (
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// These tests train on the real MNIST files (from the GoMNIST module
// through the Go module proxy), on subsets small enough for seconds.

func quickConfig(t *testing.T, mode string) *Config {
	cfg := Default()
	cfg.Run.Name = "test-" + mode
	cfg.Run.OutDir = t.TempDir()
	cfg.Data.TrainLimit, cfg.Data.ValLimit, cfg.Data.TestLimit = 4000, 1000, 2000
	cfg.Binarize.Mode = mode
	cfg.Binarize.EpochsPerLayer = 1
	cfg.Train.Epochs = 3
	cfg.Sensitivity.Epochs = 2
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

func runQuiet(t *testing.T, cfg *Config) *Result {
	t.Helper()
	var out bytes.Buffer
	res, err := Run(context.Background(), cfg, Options{Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	return res
}

// stripTimes drops the wall-clock fields, which differ between runs.
func stripTimes(h []EpochMetrics) []EpochMetrics {
	out := append([]EpochMetrics(nil), h...)
	for i := range out {
		out[i].Seconds, out[i].ImgPerSec = 0, 0
	}
	return out
}

func TestRealMNISTLearnsInEveryMode(t *testing.T) {
	for _, c := range []struct {
		mode   string
		ste    string
		minAcc float64
	}{
		{"float", "identity", 0.85},
		{"binary", "identity", 0.75},
		{"binary", "clipped", 0.75},
		{"iterative", "identity", 0.80},
	} {
		t.Run(c.mode+"-"+c.ste, func(t *testing.T) {
			cfg := quickConfig(t, c.mode)
			cfg.Binarize.STE = c.ste
			cfg.Binarize.ClipLatent = c.ste == "clipped"
			res := runQuiet(t, cfg)
			if len(res.History) != 3 {
				t.Fatalf("%d epochs recorded", len(res.History))
			}
			first, last := res.History[0], res.History[2]
			if last.TrainLoss >= first.TrainLoss && c.mode != "iterative" {
				t.Errorf("training loss did not fall: %v → %v", first.TrainLoss, last.TrainLoss)
			}
			if res.Summary.Headline == nil || res.Summary.Headline.TestAcc < c.minAcc {
				t.Errorf("headline %+v, want test accuracy ≥ %v", res.Summary.Headline, c.minAcc)
			}
			for _, m := range res.History {
				if c.mode == "float" && len(m.BinaryLayers) != 0 || c.mode == "binary" && !m.AllBinary {
					t.Errorf("epoch %d binary layers %v", m.Epoch, m.BinaryLayers)
				}
				if len(m.Layers) != 3 || m.Layers[0].Name != "fc1" || m.Layers[0].Std <= 0 {
					t.Errorf("epoch %d layer statistics %+v", m.Epoch, m.Layers)
				}
				// Float layers report no flips; binary ones flip some signs
				// (Adam with lr 0.1 moves every latent weight each step).
				if c.mode == "float" && m.FlipRatio != 0 || c.mode != "float" && !(m.FlipRatio > 0 && m.FlipRatio < 0.5) {
					t.Errorf("epoch %d flip ratio %v", m.Epoch, m.FlipRatio)
				}
				for _, l := range m.Layers {
					if l.Binary != slices.Contains(m.BinaryLayers, l.Name) || !l.Binary && l.FlipRatio != 0 {
						t.Errorf("epoch %d layer %+v with binary layers %v", m.Epoch, l, m.BinaryLayers)
					}
				}
			}
			for _, f := range []string{ConfigFile, RunInfoFile, MetricsCSVFile, MetricsJSONLFile, CheckpointFile, ResultFile} {
				if _, err := os.Stat(filepath.Join(res.Dir, f)); err != nil {
					t.Errorf("run folder lacks %s", f)
				}
			}
			csv, _ := os.ReadFile(filepath.Join(res.Dir, MetricsCSVFile))
			if lines := strings.Count(string(csv), "\n"); lines != 4 {
				t.Errorf("metrics.csv has %d lines, want header + 3", lines)
			}
		})
	}
}

func TestSameSeedSameMetrics(t *testing.T) {
	cfg := quickConfig(t, "iterative")
	cfg.Train.Epochs = 2
	a, b := runQuiet(t, cfg), runQuiet(t, cfg)
	if !reflect.DeepEqual(stripTimes(a.History), stripTimes(b.History)) {
		t.Fatalf("same seed, different metrics:\n%+v\n%+v", a.History, b.History)
	}
	cfg.Run.Seed++
	c := runQuiet(t, cfg)
	if reflect.DeepEqual(stripTimes(a.History), stripTimes(c.History)) {
		t.Fatal("another seed gave identical metrics")
	}
}

func TestResumeIsBitIdentical(t *testing.T) {
	for _, opt := range []string{"adam", "sgd"} {
		t.Run(opt, func(t *testing.T) {
			cfg := quickConfig(t, "iterative")
			cfg.Run.Name = "resume"
			cfg.Binarize.Order = Order{Rule: OrderRandom}
			cfg.Train.Epochs = 4
			cfg.Train.Optimizer = opt
			cfg.Train.Momentum = 0.9
			cfg.Train.LRSchedule, cfg.Train.Milestones = "multistep", []int{2}
			cfg.Binarize.ResetLatentEachEpoch = true
			full := runQuiet(t, cfg)

			// Interrupt a second run during its epoch 2, as SIGINT does.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out bytes.Buffer
			_, err := Run(ctx, cfg, Options{Out: &out, AfterEpoch: func(m EpochMetrics) {
				if m.Epoch == 1 {
					cancel()
				}
			}})
			if err == nil || !strings.Contains(err.Error(), "--resume") {
				t.Fatalf("interrupted run returned %v", err)
			}
			dirs, _ := filepath.Glob(filepath.Join(cfg.Run.OutDir, "resume-*"))
			var dir string
			for _, d := range dirs {
				if d != full.Dir {
					dir = d
				}
			}
			resumed, err := Resume(context.Background(), dir, Options{Out: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(stripTimes(full.History), stripTimes(resumed.History)) {
				t.Fatalf("resumed metrics differ:\n%+v\n%+v", full.History, resumed.History)
			}
			_, a, err := LoadCheckpointFile(filepath.Join(full.Dir, CheckpointFile))
			if err != nil {
				t.Fatal(err)
			}
			_, b, err := LoadCheckpointFile(filepath.Join(dir, CheckpointFile))
			if err != nil {
				t.Fatal(err)
			}
			for i := range a {
				for j := range a[i] {
					if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
						t.Fatalf("tensor %d element %d: %v after an uninterrupted run, %v after resume", i, j, a[i][j], b[i][j])
					}
				}
			}
			// Resuming a finished run only reports it.
			again, err := Resume(context.Background(), dir, Options{Out: io.Discard})
			if err != nil || len(again.History) != 4 {
				t.Fatalf("resuming a finished run: %v", err)
			}
		})
	}
}

func TestCorruptAndTruncatedCheckpointsFailClearly(t *testing.T) {
	cfg := quickConfig(t, "binary")
	cfg.Train.Epochs = 1
	res := runQuiet(t, cfg)
	path := filepath.Join(res.Dir, CheckpointFile)
	good, _ := os.ReadFile(path)
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", good[:len(good)/2], "truncated or corrupt"},
		{"flipped byte", flip(good, len(good)-100), "truncated or corrupt"},
		{"not a checkpoint", []byte("hello world, not a checkpoint"), "not an iterbin checkpoint"},
	} {
		if err := os.WriteFile(path, c.data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Resume(context.Background(), res.Dir, Options{Out: io.Discard})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	kept, _ := filepath.Glob(filepath.Join(res.Dir, "checkpoint-e*.bin"))
	for _, p := range append(kept, path) {
		os.Remove(p)
	}
	if _, err := Resume(context.Background(), res.Dir, Options{Out: io.Discard}); err == nil || !strings.Contains(err.Error(), "no checkpoint") {
		t.Errorf("missing checkpoint: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x40
	return c
}

func TestSensitivityRankingOfKnownCase(t *testing.T) {
	// Known answer from the numbers alone: accuracy ranks high first, loss
	// ranks low first, ties keep forward order.
	res := []LayerSensitivity{
		{Layer: "fc1", BestValAcc: 0.97, BestValLoss: 0.20},
		{Layer: "fc2", BestValAcc: 0.98, BestValLoss: 0.10},
		{Layer: "fc3", BestValAcc: 0.90, BestValLoss: 0.40},
		{Layer: "fc4", BestValAcc: 0.97, BestValLoss: 0.30},
	}
	if got := RankLayers(res, "accuracy"); !reflect.DeepEqual(got, []string{"fc2", "fc1", "fc4", "fc3"}) {
		t.Errorf("accuracy ranking %v", got)
	}
	if got := RankLayers(res, "loss"); !reflect.DeepEqual(got, []string{"fc2", "fc1", "fc4", "fc3"}) {
		t.Errorf("loss ranking %v", got)
	}
}

// A network whose last layer maps a 2-unit bottleneck to 10 classes: with
// that layer binary, each class logit is ±h1 ±h2 (four sign patterns for
// ten classes), while binarizing the wide first layer costs little. The
// ranking must put fc1 first and fc3 last.
func TestSensitivityPretrainingFindsTheBottleneck(t *testing.T) {
	cfg := quickConfig(t, "iterative")
	cfg.Model.Hidden = []int{256, 2}
	cfg.Binarize.Order = Order{Rule: OrderGuided}
	cfg.Sensitivity.Epochs = 2
	var out bytes.Buffer
	r, path, err := RunSensitivity(context.Background(), cfg, Options{Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if len(r.Ranking) != 3 || r.Ranking[0] != "fc1" || r.Ranking[2] != "fc3" {
		t.Errorf("ranking %v, want fc1 first and fc3 last; layers %+v", r.Ranking, r.Layers)
	}
	// A guided run reuses the saved ranking without training it again.
	out.Reset()
	cfg.Train.Epochs = 1
	res, err := Run(context.Background(), cfg, Options{Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "sensitivity ranking from "+path) {
		t.Errorf("guided run did not reuse %s:\n%s", path, out.String())
	}
	if got := res.History[0].BinaryLayers; len(got) != 1 || got[0] != r.Ranking[0] {
		t.Errorf("guided run binarized %v first, want %s", got, r.Ranking[0])
	}
	// A ranking for another configuration is refused, not silently used.
	cfg.Train.LR = 0.05
	cfg.Sensitivity.File = path
	if _, _, err := RunSensitivity(context.Background(), cfg, Options{Out: io.Discard}); err == nil || !strings.Contains(err.Error(), "different configuration") {
		t.Errorf("stale ranking: %v", err)
	}
}

// A short conv run on real Fashion-MNIST (Debian's dataset-fashion-mnist,
// installed by .ci/run): a fully binary VGG-5 must learn.
func TestRealFashionMNISTBinaryVGG5Learns(t *testing.T) {
	if _, err := os.Stat("/usr/share/datasets/fashion-mnist"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("Fashion-MNIST missing in CI: .ci/run must install dataset-fashion-mnist")
		}
		t.Skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
	}
	cfg := quickConfig(t, "binary")
	cfg.Data.Dataset = "fashion-mnist"
	cfg.Model.Arch = "vgg5"
	cfg.Data.TrainLimit, cfg.Data.ValLimit, cfg.Data.TestLimit = 1500, 500, 1000
	cfg.Train.Epochs = 3
	res := runQuiet(t, cfg)
	if h := res.Summary.Headline; h == nil || h.TestAcc < 0.65 {
		t.Errorf("binary VGG-5 on Fashion-MNIST: headline %+v, want test accuracy ≥ 0.65 (chance is 0.10)", h)
	}
	if last := res.History[len(res.History)-1]; !last.AllBinary || last.TrainLoss >= res.History[0].TrainLoss {
		t.Errorf("history %+v", res.History)
	}
}
