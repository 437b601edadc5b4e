package trainer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"iterbin/loaders"
	"iterbin/models"
)

// resumeConfig is a small run with mid-epoch checkpoints: 40 steps an
// epoch, one every 7 steps.
func resumeConfig(dir string) *Config {
	cfg := Default()
	cfg.Run.Name = "kill"
	cfg.Run.OutDir = dir
	cfg.Data.TrainLimit, cfg.Data.ValLimit, cfg.Data.TestLimit = 4000, 500, 500
	cfg.Binarize.EpochsPerLayer = 1
	cfg.Binarize.Order = Order{Rule: OrderReverse}
	cfg.Train.Epochs = 3
	cfg.Train.Optimizer, cfg.Train.Momentum, cfg.Train.LR = "sgd", 0.9, 0.05
	cfg.Checkpoint = CheckpointConfig{EverySteps: 7, Keep: 2}
	return &cfg
}

func finalTensors(t *testing.T, dir string) [][]float32 {
	t.Helper()
	_, v, err := LoadCheckpointFile(filepath.Join(dir, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sameBits(t *testing.T, a, b [][]float32) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%d tensors against %d", len(a), len(b))
	}
	for i := range a {
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				t.Fatalf("tensor %d element %d: %v uninterrupted, %v resumed", i, j, a[i][j], b[i][j])
			}
		}
	}
}

func TestMidEpochInterruptResumesBitIdentical(t *testing.T) {
	dir := t.TempDir()
	full, err := Run(context.Background(), resumeConfig(filepath.Join(dir, "full")), Options{Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := resumeConfig(filepath.Join(dir, "cut"))
	_, err = Run(ctx, cfg, Options{Out: io.Discard, AfterStep: func(steps int) {
		if steps == 53 { // mid epoch 1, between two periodic checkpoints
			cancel()
		}
	}})
	if err == nil || !strings.Contains(err.Error(), "at batch 13") {
		t.Fatalf("interrupted run: %v", err)
	}
	runs, _ := filepath.Glob(filepath.Join(cfg.Run.OutDir, "kill-*"))
	kept, _ := filepath.Glob(filepath.Join(runs[0], "checkpoint-e*-b*.bin"))
	if len(kept) != 2 || !strings.HasSuffix(kept[1], "checkpoint-e000001-b0000013.bin") {
		t.Errorf("kept checkpoints %v, want the newest two ending at epoch 1 batch 13", kept)
	}
	// A mid-epoch checkpoint is not exported: the run's layers and metrics
	// describe epoch ends.
	if _, err := Export(runs[0], filepath.Join(dir, "m.ibm"), true); err == nil || !strings.Contains(err.Error(), "middle of epoch 1") {
		t.Errorf("export of a mid-epoch run: %v", err)
	}
	// Without checkpoint.bin the newest kept checkpoint is used.
	os.Remove(filepath.Join(runs[0], CheckpointFile))
	resumed, err := Resume(context.Background(), runs[0], Options{Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stripTimes(full.History), stripTimes(resumed.History)) {
		t.Fatalf("metrics differ:\n%+v\n%+v", full.History, resumed.History)
	}
	sameBits(t, finalTensors(t, full.Dir), finalTensors(t, runs[0]))
}

// The child process of TestKilledRunResumesBitIdentical trains until it
// is killed.
func TestKillChild(t *testing.T) {
	dir := os.Getenv("ITERBIN_KILL_CHILD")
	if dir == "" {
		t.Skip("runs only as the child of TestKilledRunResumesBitIdentical")
	}
	Run(context.Background(), resumeConfig(dir), Options{Out: io.Discard, AfterStep: func(int) { time.Sleep(15 * time.Millisecond) }})
}

// A run killed with SIGKILL at an arbitrary moment resumes from its last
// checkpoint and ends bit-identical to an uninterrupted run.
func TestKilledRunResumesBitIdentical(t *testing.T) {
	dir := t.TempDir()
	for _, delay := range []time.Duration{700 * time.Millisecond, 1900 * time.Millisecond} {
		t.Run(fmt.Sprint(delay), func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprint(delay.Milliseconds()))
			cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "ITERBIN_KILL_CHILD="+out)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Kill once a checkpoint exists, delay after it appeared.
			deadline := time.Now().Add(60 * time.Second)
			for {
				if runs, _ := filepath.Glob(filepath.Join(out, "kill-*", CheckpointFile)); len(runs) > 0 {
					break
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatalf("no checkpoint after a minute: %s", stderr.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(delay)
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			runs, _ := filepath.Glob(filepath.Join(out, "kill-*"))
			resumed, err := Resume(context.Background(), runs[0], Options{Out: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			full, err := Run(context.Background(), resumeConfig(filepath.Join(out, "full")), Options{Out: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(stripTimes(full.History), stripTimes(resumed.History)) {
				t.Fatalf("metrics differ:\n%+v\n%+v", full.History, resumed.History)
			}
			sameBits(t, finalTensors(t, full.Dir), finalTensors(t, runs[0]))
		})
	}
}

// divergingSession is an MLP session whose first step's loss is NaN: an
// infinite bias in the last layer, whose batch norm computes ∞ − ∞.
func divergingSession(t *testing.T) *session {
	t.Helper()
	s := mlpSession(t, loaders.Synthetic(300, 1, 28, 10, 1))
	last := s.model.Binarizable()[2].(*models.Dense)
	s.be.Fill(last.Params()[1].Value, float32(math.Inf(1)), 10)
	return s
}

// mlpSession is a session of the default MLP on data, on the CPU.
func mlpSession(t *testing.T, data *loaders.Dataset) *session {
	t.Helper()
	cfg := Default()
	cfg.Train.TestBatchSize = 100
	be, err := OpenBackend("cpu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	layers, _ := binarizableLayers(&cfg)
	s, err := newSession(&cfg, be, data, Schedule{Mode: "iterative", Order: layers, EpochsPerLayer: 1}, 1, cfg.Train.ScheduleConfig, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.free)
	return s
}

// TestStepErrorsNameTheirBatch: losses are checked one step late, but an
// error recorded while a step is queued (here a label that is no class,
// in the third batch) still names that batch and step.
func TestStepErrorsNameTheirBatch(t *testing.T) {
	data := loaders.Synthetic(300, 1, 28, 10, 1)
	s := mlpSession(t, data)
	bs := s.cfg.Train.BatchSize
	order := loaders.EpochOrder(data.Train.N, s.cfg.Run.Seed, 0)
	data.Train.Labels[order[2*bs]] = 99
	_, err := s.runEpoch(context.Background(), 0, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "epoch 0, batch 2 (step 3)") || !strings.Contains(err.Error(), "label") {
		t.Fatalf("error %v, want one naming epoch 0, batch 2, step 3 and the label", err)
	}
}

func TestNaNLossStopsTheRunNamingTheStep(t *testing.T) {
	s := divergingSession(t)
	_, err := s.runEpoch(context.Background(), 0, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "epoch 0, batch 0 (step 1)") || !strings.Contains(err.Error(), "NaN") ||
		!strings.Contains(err.Error(), "lower train.lr") {
		t.Fatalf("error %v, want one naming epoch 0, batch 0, step 1 and NaN, and what to try", err)
	}
	// At fp16 the likelier cause is a forward pass beyond fp16's range,
	// which loss scaling does not catch.
	s.cfg.Run.Precision = "fp16"
	if hint := s.divergedHint(); !strings.Contains(hint, "65504") || !strings.Contains(hint, `run.precision = "bf16"`) {
		t.Errorf("the fp16 hint %q does not point at fp16's range and bf16", hint)
	}
}

// TestNaNLossIsNeverCheckpointed: losses are checked one step late, so a
// checkpoint asked for right after a diverged step must check that step
// itself and refuse, rather than save the diverged model.
func TestNaNLossIsNeverCheckpointed(t *testing.T) {
	s := divergingSession(t)
	saved := 0
	_, err := s.runEpoch(context.Background(), 0, nil, func(step stepInfo) error {
		st, err := step.state() // a checkpoint after every step
		if err != nil {
			return err
		}
		if l := float64(st.Sums[0]); math.IsNaN(l) || math.IsInf(l, 0) {
			t.Errorf("a checkpoint state holds the loss sum %v", l)
		}
		saved++
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "batch 0") || !strings.Contains(err.Error(), "NaN") {
		t.Fatalf("error %v, want one naming batch 0 and NaN", err)
	}
	if saved != 0 {
		t.Fatalf("%d checkpoint states were made after the loss became NaN", saved)
	}
}
