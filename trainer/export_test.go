package trainer

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Sizes of the paper's MLPs, computed by hand: binary weights take one bit
// (rounded up to whole bytes per layer); biases, batch-norm parameters and
// running statistics are float32.
func TestSummaryOfThePaperMLPs(t *testing.T) {
	for _, c := range []struct {
		hidden                []int
		weights, floats       int
		payload, float32Bytes int
		macs                  int
	}{
		// 784·300 + 300·100 + 100·10 weights; floats: biases 410, BN γ/β 820, running stats 820.
		{[]int{300, 100}, 266200, 2050, 235200/8 + 30000/8 + (1000+7)/8 + 4*2050, 4 * (266200 + 2050), 266200},
		// 2·784·784 + 784·10 weights; floats: biases 1578, BN γ/β 3156, running stats 3156.
		{[]int{784, 784}, 1237152, 7890, 614656/8*2 + 7840/8 + 4*7890, 4 * (1237152 + 7890), 1237152},
	} {
		cfg := Default()
		cfg.Model.Hidden = c.hidden
		s, err := SummarizeConfig(&cfg) // iterative, 450 epochs: every layer binary at the end
		if err != nil {
			t.Fatal(err)
		}
		weights, macs := 0, 0
		for _, l := range s.Layers {
			weights += l.Weights
			macs += l.MACs
			if !l.Binary || l.Bits != 1 {
				t.Errorf("%v: layer %+v not binary", c.hidden, l)
			}
		}
		if weights != c.weights || s.FloatParams != c.floats || s.PayloadBytes != c.payload || s.Float32Bytes != c.float32Bytes || macs != c.macs {
			t.Errorf("%v: weights %d floats %d payload %d float32 %d MACs %d; want %d %d %d %d %d", c.hidden,
				weights, s.FloatParams, s.PayloadBytes, s.Float32Bytes, macs, c.weights, c.floats, c.payload, c.float32Bytes, c.macs)
		}
		if s.BinaryMACShare != 1 || s.Compression < 25 {
			t.Errorf("%v: binary MAC share %v, compression %v", c.hidden, s.BinaryMACShare, s.Compression)
		}
		if over := float64(s.FileBytes-s.PayloadBytes) / float64(s.FileBytes); over > 0.01 {
			t.Errorf("%v: the export header is %.2f%% of the file", c.hidden, 100*over)
		}
	}
	// A float model and an iterative run too short to binarize everything.
	cfg := Default()
	cfg.Binarize.Mode = "float"
	if s, _ := SummarizeConfig(&cfg); s.BinaryMACShare != 0 || s.Compression > 1.01 {
		t.Errorf("float model: %+v", s)
	}
	cfg = Default()
	cfg.Train.Epochs = 200 // fc1 from 0, fc2 from 150
	s, _ := SummarizeConfig(&cfg)
	if !s.Layers[0].Binary || !s.Layers[1].Binary || s.Layers[2].Binary {
		t.Errorf("200 of 450 epochs: %+v", s.Layers)
	}
}

func TestExportedModelPredictsExactlyLikeTheCheckpoint(t *testing.T) {
	cfg := quickConfig(t, "binary")
	cfg.Train.Epochs = 1
	res := runQuiet(t, cfg)
	out := filepath.Join(t.TempDir(), "model.ibm")
	sum, err := Export(res.Dir, out, false)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(out)
	if int(fi.Size()) != sum.FileBytes {
		t.Errorf("file has %d bytes, summary says %d", fi.Size(), sum.FileBytes)
	}
	if s2, err := SummarizeCheckpoint(res.Dir); err != nil || s2.FileBytes != sum.FileBytes {
		t.Errorf("summary of the checkpoint: %+v, %v", s2, err)
	}
	data := cfg.Data
	got, h, err := EvalExport(context.Background(), out, &data)
	if err != nil {
		t.Fatal(err)
	}
	want, err := EvalCheckpoint(context.Background(), res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Predictions, want.Predictions) || got.Loss != want.Loss || got.Acc != want.Acc {
		t.Fatalf("exported model: loss %v acc %v; checkpoint: loss %v acc %v", got.Loss, got.Acc, want.Loss, want.Acc)
	}
	if got.Acc != res.History[0].TestAcc || len(got.Predictions) != 2000 || h.Arch != "mlp" {
		t.Errorf("export accuracy %v, run's test accuracy %v (%d predictions)", got.Acc, res.History[0].TestAcc, len(got.Predictions))
	}

	// Corrupt and truncated files fail clearly.
	good, _ := os.ReadFile(out)
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", good[:len(good)-1000], "truncated or corrupt"},
		{"flipped", flip(good, 500), "truncated or corrupt"},
		{"other file", []byte("GIF89a and more bytes here"), "not an iterbin model"},
	} {
		p := filepath.Join(t.TempDir(), c.name)
		os.WriteFile(p, c.data, 0o644)
		if _, _, err := EvalExport(context.Background(), p, &data); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestExportRefusesFloatLayersUnlessAsked(t *testing.T) {
	cfg := quickConfig(t, "iterative")
	cfg.Train.Epochs = 1 // only fc1 binary
	res := runQuiet(t, cfg)
	out := filepath.Join(t.TempDir(), "model.ibm")
	if _, err := Export(res.Dir, out, false); err == nil || !strings.Contains(err.Error(), "--allow-float") {
		t.Fatalf("export of a partly binary model: %v", err)
	}
	sum, err := Export(filepath.Join(res.Dir, CheckpointFile), out, true)
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Layers[0].Binary || sum.Layers[1].Binary || sum.Layers[1].Bits != 32 {
		t.Errorf("layers %+v", sum.Layers)
	}
	data := cfg.Data
	got, _, err := EvalExport(context.Background(), out, &data)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := EvalCheckpoint(context.Background(), res.Dir)
	if !slices.Equal(got.Predictions, want.Predictions) {
		t.Error("a model with float layers predicts differently after export")
	}
}
