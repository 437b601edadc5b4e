package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"iterbin/backend"
	"iterbin/loaders"
)

// LayerSensitivity is the outcome of training with one layer binary.
type LayerSensitivity struct {
	Layer           string  `json:"layer"`
	BestValAcc      float64 `json:"best_val_acc"`
	BestValAccEpoch int     `json:"best_val_acc_epoch"`
	BestValLoss     float64 `json:"best_val_loss"`
	FinalValAcc     float64 `json:"final_val_acc"`
	Seconds         float64 `json:"seconds"`
}

// Ranking is the result of sensitivity pre-training, saved as JSON and
// reused by guided orders.
type Ranking struct {
	Fingerprint string             `json:"fingerprint"`
	Metric      string             `json:"metric"`
	Epochs      int                `json:"epochs"`
	Layers      []LayerSensitivity `json:"layers"`
	// Ranking lists the layers least sensitive first (the guided order);
	// empty until every layer has been trained.
	Ranking []string `json:"ranking"`
}

// RankLayers orders layers least sensitive first: highest best validation
// accuracy, or lowest best validation loss; ties keep forward order.
func RankLayers(results []LayerSensitivity, metric string) []string {
	r := append([]LayerSensitivity(nil), results...)
	sort.SliceStable(r, func(i, j int) bool {
		if metric == "loss" {
			return r[i].BestValLoss < r[j].BestValLoss
		}
		return r[i].BestValAcc > r[j].BestValAcc
	})
	names := make([]string, len(r))
	for i, l := range r {
		names[i] = l.Layer
	}
	return names
}

// SensitivityPath is where the ranking of cfg is kept: sensitivity.file,
// or a file named by the configuration's fingerprint under run.out_dir, so
// every experiment that shares data, model and training shares a ranking.
func SensitivityPath(cfg *Config) string {
	if cfg.Sensitivity.File != "" {
		return cfg.Sensitivity.File
	}
	return filepath.Join(cfg.Run.OutDir, "sensitivity", fmt.Sprintf("%s-%s-%s.json", cfg.Data.Dataset, cfg.Model.Arch, cfg.SensitivityFingerprint()))
}

// readRanking reads a ranking file; a missing file gives (nil, nil).
func readRanking(path, fingerprint string) (*Ranking, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Ranking
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("sensitivity ranking %s: %v; delete it to recompute", path, err)
	}
	if r.Fingerprint != fingerprint {
		return nil, fmt.Errorf("sensitivity ranking %s was computed for a different configuration (fingerprint %s, this one is %s); delete it or set sensitivity.file to another path", path, r.Fingerprint, fingerprint)
	}
	return &r, nil
}

// RunSensitivity trains, for each binarizable layer, a model from scratch
// with only that layer binary from the first epoch for sensitivity.epochs
// epochs, and ranks the layers. Each finished layer is saved at once, so an
// interrupted pre-training continues with the layers not yet done. A
// complete ranking already on disk is returned as it is.
func RunSensitivity(ctx context.Context, cfg *Config, opts Options) (*Ranking, string, error) {
	be, err := OpenRunBackend(cfg)
	if err != nil {
		return nil, "", err
	}
	defer be.Close()
	data, err := LoadData(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	return ensureRanking(ctx, cfg, be, data, opts)
}

func ensureRanking(ctx context.Context, cfg *Config, be backend.Backend, data *loaders.Dataset, opts Options) (*Ranking, string, error) {
	path := SensitivityPath(cfg)
	fp := cfg.SensitivityFingerprint()
	r, err := readRanking(path, fp)
	if err != nil {
		return nil, "", err
	}
	if r != nil && len(r.Ranking) > 0 {
		fmt.Fprintf(opts.Out, "sensitivity ranking from %s: %v (least sensitive first)\n", path, r.Ranking)
		return r, path, nil
	}
	if r == nil {
		r = &Ranking{Fingerprint: fp, Metric: cfg.Sensitivity.Metric, Epochs: cfg.Sensitivity.Epochs}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, "", err
	}
	layers, err := binarizableLayers(cfg)
	if err != nil {
		return nil, "", err
	}
	done := map[string]bool{}
	for _, l := range r.Layers {
		done[l.Layer] = true
	}
	fmt.Fprintf(opts.Out, "sensitivity pre-training: %d layers × %d epochs, one layer binary at a time → %s\n", len(layers), cfg.Sensitivity.Epochs, path)
	for _, layer := range layers {
		if done[layer] {
			fmt.Fprintf(opts.Out, "  %s: done earlier\n", layer)
			continue
		}
		res, err := sensitivityOf(ctx, cfg, be, data, layer, opts)
		if err != nil {
			return nil, "", fmt.Errorf("sensitivity of %s: %w", layer, err)
		}
		r.Layers = append(r.Layers, res)
		if err := saveRanking(path, r); err != nil {
			return nil, "", err
		}
	}
	// Keep the results in forward order so ties rank in forward order.
	pos := map[string]int{}
	for i, l := range layers {
		pos[l] = i
	}
	sort.SliceStable(r.Layers, func(i, j int) bool { return pos[r.Layers[i].Layer] < pos[r.Layers[j].Layer] })
	r.Ranking = RankLayers(r.Layers, r.Metric)
	if err := saveRanking(path, r); err != nil {
		return nil, "", err
	}
	fmt.Fprintf(opts.Out, "sensitivity ranking (least sensitive first): %v, saved to %s\n", r.Ranking, path)
	return r, path, nil
}

func saveRanking(path string, r *Ranking) error {
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(js, '\n'))
}

func sensitivityOf(ctx context.Context, cfg *Config, be backend.Backend, data *loaders.Dataset, layer string, opts Options) (LayerSensitivity, error) {
	sched := Schedule{Mode: "single", Order: []string{layer}}
	s, err := newSession(cfg, be, data, sched, cfg.Sensitivity.Epochs, cfg.Sensitivity.ScheduleConfig, false, opts.Progress)
	if err != nil {
		return LayerSensitivity{}, err
	}
	defer s.free()
	start := time.Now()
	res := LayerSensitivity{Layer: layer, BestValAccEpoch: -1}
	for e := 0; e < s.epochs; e++ {
		m, err := s.runEpoch(ctx, e, nil, nil)
		if err != nil {
			s.progress.clear()
			return res, err
		}
		if res.BestValAccEpoch < 0 || m.ValAcc > res.BestValAcc {
			res.BestValAcc, res.BestValAccEpoch = m.ValAcc, e
		}
		if e == 0 || m.ValLoss < res.BestValLoss {
			res.BestValLoss = m.ValLoss
		}
		res.FinalValAcc = m.ValAcc
		fmt.Fprintf(opts.Out, "  %s binary, epoch %d/%d: val loss %.4f acc %.2f%% (best %.2f%%)\n", layer, e, s.epochs, m.ValLoss, 100*m.ValAcc, 100*res.BestValAcc)
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}
