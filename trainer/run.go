// Package trainer owns training: the TOML experiment configuration, the
// binarization schedules and orders, sensitivity pre-training, optimizers
// and learning-rate schedules, the epoch loop, metrics, run folders and
// checkpoints with bit-identical resume.
package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"iterbin/loaders"
)

// Files of a run folder.
const (
	ConfigFile       = "config.toml"   // the resolved configuration
	RunInfoFile      = "run.json"      // order, backend, dataset facts
	MetricsCSVFile   = "metrics.csv"   // one row per epoch
	MetricsJSONLFile = "metrics.jsonl" // one object per epoch
	CheckpointFile   = "checkpoint.bin"
	ResultFile       = "result.json" // the Summary, written when the run ends
)

// Options are where a run writes for people.
type Options struct {
	// Out receives the header, one line per epoch and the result table.
	Out io.Writer
	// Progress draws a live bar on a terminal; nil draws none.
	Progress *Progress
	// AfterEpoch, if set, is called after each epoch's metrics and
	// checkpoint are written.
	AfterEpoch func(EpochMetrics)
	// AfterStep, if set, is called after each optimizer step (and its
	// checkpoint, if one is due) with the number of steps made.
	AfterStep func(steps int)
}

// RunInfo is written to run.json when a run starts.
type RunInfo struct {
	Name            string   `json:"name"`
	Started         string   `json:"started"`
	Backend         string   `json:"backend"`
	Arch            string   `json:"arch"`
	Dataset         string   `json:"dataset"`
	DataDir         string   `json:"data_dir"`
	Train           int      `json:"train_samples"`
	Val             int      `json:"val_samples"`
	Test            int      `json:"test_samples"`
	Split           string   `json:"validation_split"`
	Augment         string   `json:"augmentation"`
	Layers          []string `json:"binarizable_layers"`
	Order           []string `json:"order"`
	OrderRule       string   `json:"order_rule"`
	FullyBinaryFrom int      `json:"fully_binary_from_epoch"`
	SensitivityFile string   `json:"sensitivity_file,omitempty"`
}

// Result is what a finished run returns.
type Result struct {
	Dir     string
	Summary Summary
	History []EpochMetrics
}

// LoadData loads the configured dataset and applies the limits.
func LoadData(ctx context.Context, cfg *Config) (*loaders.Dataset, error) {
	var d *loaders.Dataset
	var err error
	switch cfg.Data.Dataset {
	case "cifar10":
		d, err = loaders.LoadCIFAR10(cfg.Data.Dir, cfg.Data.Validation, cfg.Run.Seed)
	case "imagenet":
		_, _, _, classes, _ := inputShape(cfg)
		d, err = loaders.LoadImageNet(cfg.Data.Dir, cfg.Data.Validation, cfg.Run.Seed,
			loaders.ImageTransform{Size: cfg.Data.ImageSize, Resize: cfg.Data.Resize}, classes, os.Stderr)
	default:
		d, err = loaders.LoadMNISTLike(ctx, cfg.Data.Dataset, cfg.Data.Dir, cfg.Data.Validation)
	}
	if err != nil {
		return nil, err
	}
	switch cfg.Data.Augment {
	case "none":
		d.Augment = loaders.Augmentation{}
	case "crop-flip":
		if cfg.Data.Dataset == "imagenet" {
			return nil, fmt.Errorf("data.augment = \"crop-flip\" is CIFAR's padded crop; ImageNet uses RandomResizedCrop (\"auto\") or \"none\"")
		}
		d.Augment = loaders.Augmentation{CropPad: 4, Flip: true}
	}
	lim := func(v, n int) int {
		if v == 0 {
			return n
		}
		return v
	}
	d.Subset(lim(cfg.Data.TrainLimit, d.Train.N), lim(cfg.Data.ValLimit, d.Val.N), lim(cfg.Data.TestLimit, d.Test.N), cfg.Run.Seed)
	return d, nil
}

// Run trains a new run of cfg in a new folder under cfg.Run.OutDir.
func Run(ctx context.Context, cfg *Config, opts Options) (*Result, error) {
	be, err := OpenRunBackend(cfg)
	if err != nil {
		return nil, err
	}
	defer be.Close()
	data, err := LoadData(ctx, cfg)
	if err != nil {
		return nil, err
	}
	layers, err := binarizableLayers(cfg)
	if err != nil {
		return nil, err
	}
	info := RunInfo{Name: cfg.Run.Name, Started: time.Now().UTC().Format(time.RFC3339), Backend: be.Name(),
		Dataset: data.Name, DataDir: data.Dir, Train: data.Train.N, Val: data.Val.N, Test: data.Test.N,
		Split: data.SplitNote, Augment: describeAugment(data.Augment),
		Layers: layers, OrderRule: cfg.Binarize.Order.String()}
	var ranking []string
	if r := cfg.Binarize.Order.Rule; cfg.Binarize.Mode == "iterative" && (r == OrderGuided || r == OrderGuidedReverse) {
		rk, path, err := ensureRanking(ctx, cfg, be, data, opts)
		if err != nil {
			return nil, err
		}
		ranking = rk.Ranking
		if info.SensitivityFile, err = filepath.Abs(path); err != nil {
			return nil, err
		}
	}
	order := layers
	if cfg.Binarize.Mode == "iterative" {
		if order, err = ResolveOrder(cfg.Binarize.Order, layers, cfg.Run.Seed, ranking); err != nil {
			return nil, fmt.Errorf("binarize.order: %w", err)
		}
	}
	info.Order = order
	dir, err := newRunDir(cfg.Run.OutDir, cfg.Run.Name)
	if err != nil {
		return nil, err
	}
	text, err := cfg.Encode()
	if err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(filepath.Join(dir, ConfigFile), text); err != nil {
		return nil, err
	}
	sched := Schedule{Mode: cfg.Binarize.Mode, Order: order, EpochsPerLayer: cfg.Binarize.EpochsPerLayer}
	info.FullyBinaryFrom = sched.FullyBinaryFrom(len(layers))
	js, _ := json.MarshalIndent(info, "", "  ")
	if err := WriteFileAtomic(filepath.Join(dir, RunInfoFile), append(js, '\n')); err != nil {
		return nil, err
	}
	s, err := newSession(cfg, be, data, sched, cfg.Train.Epochs, cfg.Train.ScheduleConfig, true, opts.Progress)
	if err != nil {
		return nil, err
	}
	defer s.free()
	printHeader(opts.Out, dir, cfg, info)
	return trainRun(ctx, s, dir, 0, nil, opts)
}

// Resume continues the run in dir from its checkpoint. On the CPU backend
// the continued run is bit-identical to one never interrupted.
func Resume(ctx context.Context, dir string, opts Options) (*Result, error) {
	cfg, err := LoadConfig(filepath.Join(dir, ConfigFile), nil)
	if err != nil {
		return nil, fmt.Errorf("resume %s: %w", dir, err)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "checkpoint-e*-b*.bin"))
	if _, err := os.Stat(filepath.Join(dir, CheckpointFile)); err != nil && len(kept) == 0 {
		return nil, fmt.Errorf("resume %s: %w: the run stopped before its first checkpoint; start it again with iterbin run", dir, errCheckpointMissing)
	}
	be, err := OpenRunBackend(cfg)
	if err != nil {
		return nil, err
	}
	defer be.Close()
	data, err := LoadData(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s, err := newSession(cfg, be, data, Schedule{}, cfg.Train.Epochs, cfg.Train.ScheduleConfig, true, opts.Progress)
	if err != nil {
		return nil, err
	}
	defer s.free()
	hdr, err := readLatestCheckpoint(dir, be, s.tensors())
	if err != nil {
		return nil, err
	}
	s.sched = Schedule{Mode: cfg.Binarize.Mode, Order: hdr.Order, EpochsPerLayer: cfg.Binarize.EpochsPerLayer}
	s.opt.Steps = hdr.Steps
	s.history = hdr.History
	// The metrics files may hold epochs trained after the checkpoint was
	// written; make them agree with it.
	if err := writeMetrics(dir, s.history); err != nil {
		return nil, err
	}
	at := "the start"
	if hdr.Partial != nil {
		at = fmt.Sprintf("batch %d", hdr.Partial.Batch)
	}
	fmt.Fprintf(opts.Out, "Resuming %s at epoch %d (%s) of %d (order %s, %s)\n", dir, hdr.NextEpoch, at, cfg.Train.Epochs, strings.Join(hdr.Order, " → "), be.Name())
	return trainRun(ctx, s, dir, hdr.NextEpoch, hdr.Partial, opts)
}

// trainRun runs epochs from first (from partial's position within it, if
// set) to the end, checkpointing after each epoch, every
// checkpoint.every_steps steps, and when interrupted.
func trainRun(ctx context.Context, s *session, dir string, first int, partial *epochState, opts Options) (*Result, error) {
	if first == 0 && partial == nil {
		printEpochHeader(opts.Out)
	}
	every := s.cfg.Checkpoint.EverySteps
	save := func(next int, st *epochState) error {
		hdr := CheckpointHeader{NextEpoch: next, Partial: st, Steps: s.opt.Steps, Order: s.sched.Order, History: s.history}
		if err := saveCheckpoint(dir, s.be, hdr, s.tensors(), s.cfg.Checkpoint.Keep); err != nil {
			return fmt.Errorf("writing checkpoint: %w", err)
		}
		return nil
	}
	for e := first; e < s.epochs; e++ {
		resume := partial
		partial = nil
		m, err := s.runEpoch(ctx, e, resume, func(step stepInfo) error {
			// The last batch's state is saved by the epoch-end checkpoint.
			if every > 0 && s.opt.Steps%every == 0 && !step.last {
				st, err := step.state()
				if err != nil {
					return fmt.Errorf("epoch %d, %w", e, err)
				}
				if err := save(e, &st); err != nil {
					return err
				}
			}
			if opts.AfterStep != nil {
				opts.AfterStep(s.opt.Steps)
			}
			return nil
		})
		if err != nil {
			s.progress.clear()
			var intr *interrupted
			if errors.As(err, &intr) {
				if serr := save(e, &intr.state); serr != nil {
					return nil, fmt.Errorf("interrupted during epoch %d, and the final checkpoint failed: %v", e, serr)
				}
				return nil, fmt.Errorf("interrupted during epoch %d at batch %d; checkpoint written, continue with\n  iterbin run --resume %s", e, intr.state.Batch, dir)
			}
			return nil, err
		}
		s.history = append(s.history, m)
		if err := writeMetrics(dir, s.history); err != nil {
			return nil, err
		}
		if err := save(e+1, nil); err != nil {
			return nil, err
		}
		printEpoch(opts.Out, m, len(s.model.Binarizable()))
		if opts.AfterEpoch != nil {
			opts.AfterEpoch(m)
		}
	}
	sum := Summarize(s.cfg.Binarize.Mode, s.history)
	js, _ := json.MarshalIndent(sum, "", "  ")
	if err := WriteFileAtomic(filepath.Join(dir, ResultFile), append(js, '\n')); err != nil {
		return nil, err
	}
	sum.WriteTable(opts.Out, dir)
	return &Result{Dir: dir, Summary: sum, History: s.history}, nil
}

func writeMetrics(dir string, history []EpochMetrics) error {
	if err := WriteFileAtomic(filepath.Join(dir, MetricsCSVFile), MetricsCSV(history)); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, MetricsJSONLFile), MetricsJSONL(history))
}

// binarizableLayers lists the names of the binarizable layers of cfg's
// model in forward order.
func binarizableLayers(cfg *Config) ([]string, error) {
	infos, err := Describe(cfg)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(infos))
	for i, l := range infos {
		names[i] = l.Name
	}
	return names, nil
}

// newRunDir creates out/name-YYYYMMDD-HHMMSS (with a suffix if taken), so a
// new run never overwrites an old one.
func newRunDir(out, name string) (string, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	base := filepath.Join(out, name+"-"+time.Now().Format("20060102-150405"))
	for i := 0; i < 1000; i++ {
		dir := base
		if i > 0 {
			dir = fmt.Sprintf("%s.%d", base, i)
		}
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("cannot create a run folder under %s", out)
}

func printHeader(w io.Writer, dir string, cfg *Config, info RunInfo) {
	fmt.Fprintf(w, "iterbin run %s\n", cfg.Run.Name)
	fmt.Fprintf(w, "  folder     %s\n", dir)
	fmt.Fprintf(w, "  backend    %s\n", info.Backend)
	fmt.Fprintf(w, "  data       %s from %s: %d train, %d validation, %d test\n", info.Dataset, info.DataDir, info.Train, info.Val, info.Test)
	fmt.Fprintf(w, "             %s; augmentation: %s\n", info.Split, info.Augment)
	arch := cfg.Model.Arch
	if arch == "mlp" {
		arch = fmt.Sprintf("mlp %v", cfg.Model.Hidden)
	}
	fmt.Fprintf(w, "  model      %s, %d binarizable layers: %s\n", arch, len(info.Layers), strings.Join(info.Layers, ", "))
	fmt.Fprintf(w, "  train      %s lr %g (%s), batch %d, %d epochs, seed %d\n", cfg.Train.Optimizer, cfg.Train.LR, cfg.Train.LRSchedule, cfg.Train.BatchSize, cfg.Train.Epochs, cfg.Run.Seed)
	switch cfg.Binarize.Mode {
	case "float":
		fmt.Fprintf(w, "  binarize   none (float model)\n")
	case "binary":
		fmt.Fprintf(w, "  binarize   every layer from epoch 0, STE %s\n", cfg.Binarize.STE)
	default:
		fmt.Fprintf(w, "  binarize   iterative, order %s = %s, one more layer every %d epochs, STE %s\n",
			cfg.Binarize.Order, strings.Join(info.Order, " → "), cfg.Binarize.EpochsPerLayer, cfg.Binarize.STE)
		if info.FullyBinaryFrom < cfg.Train.Epochs {
			fmt.Fprintf(w, "             fully binary from epoch %d (epochs are numbered from 0)\n", info.FullyBinaryFrom)
		} else {
			fmt.Fprintf(w, "             WARNING: never fully binary: that needs epoch %d, the run has %d epochs\n", info.FullyBinaryFrom, cfg.Train.Epochs)
		}
	}
}

func describeAugment(a loaders.Augmentation) string {
	if !a.On() {
		return "none"
	}
	if a.Random {
		return "RandomResizedCrop (scale 0.08-1, aspect 3/4-4/3) and horizontal flip (training only)"
	}
	return fmt.Sprintf("random crop with %d-pixel zero padding, horizontal flip %v (training only)", a.CropPad, a.Flip)
}

func printEpochHeader(w io.Writer) {
	fmt.Fprintf(w, "%5s  %-18s %9s  %18s  %18s  %18s  %7s %8s\n", "epoch", "binary", "lr", "train loss / acc", "val loss / acc", "test loss / acc", "seconds", "img/s")
}

func printEpoch(w io.Writer, m EpochMetrics, layers int) {
	bin := strings.Join(m.BinaryLayers, ",")
	switch {
	case m.AllBinary:
		bin = "all"
	case bin == "":
		bin = "-"
	case len(bin) > 18:
		bin = fmt.Sprintf("%d/%d", len(m.BinaryLayers), layers)
	}
	scaling := ""
	if m.LossScale > 0 {
		scaling = fmt.Sprintf("  loss scale %g, %d steps skipped so far", m.LossScale, m.SkippedSteps)
	}
	fmt.Fprintf(w, "%5d  %-18s %9.3g  %8.4f  %7.2f%%  %8.4f  %7.2f%%  %8.4f  %7.2f%%  %7.1f %8.0f%s\n", m.Epoch, bin, m.LR,
		m.TrainLoss, 100*m.TrainAcc, m.ValLoss, 100*m.ValAcc, m.TestLoss, 100*m.TestAcc, m.Seconds, m.ImgPerSec, scaling)
}
