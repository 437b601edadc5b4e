package trainer

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// EpochMetrics is one row of a run's metrics.
type EpochMetrics struct {
	Epoch        int      `json:"epoch"` // 0-based
	TrainLoss    float64  `json:"train_loss"`
	TrainAcc     float64  `json:"train_acc"`
	ValLoss      float64  `json:"val_loss"`
	ValAcc       float64  `json:"val_acc"`
	TestLoss     float64  `json:"test_loss"`
	TestAcc      float64  `json:"test_acc"`
	ValTop5      float64  `json:"val_top5"`
	TestTop5     float64  `json:"test_top5"`
	BinaryLayers []string `json:"binary_layers"`
	AllBinary    bool     `json:"all_binary"`
	LR           float64  `json:"lr"`
	Seconds      float64  `json:"seconds"`
	ImgPerSec    float64  `json:"img_per_s"`
	// FlipRatio is the share of binary weights (over every layer binary
	// in this epoch) whose sign changed during the epoch.
	FlipRatio float64     `json:"flip_ratio"`
	Layers    []LayerStat `json:"layers,omitempty"`
	// UnreadableImages counts the distinct image files skipped so far.
	UnreadableImages int `json:"unreadable_images,omitempty"`
	// LossScale is the loss scale at the epoch's end, and SkippedSteps
	// the steps skipped so far in the run because a gradient was not
	// finite: at precision fp16 only (backend.LossScaler).
	LossScale    float64 `json:"loss_scale,omitempty"`
	SkippedSteps int     `json:"skipped_steps,omitempty"`
}

// LayerStat describes one binarizable layer's latent weights at the end of
// an epoch.
type LayerStat struct {
	Name   string  `json:"name"`
	Binary bool    `json:"binary"`
	Mean   float64 `json:"mean"`
	Std    float64 `json:"std"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// OutsideUnit is the share of latent weights with |w| > 1.
	OutsideUnit float64 `json:"outside_unit"`
	// FlipRatio is the share of the layer's weights whose sign changed
	// during the epoch (reported for binary layers; 0 otherwise).
	FlipRatio float64 `json:"flip_ratio"`
}

var csvHeader = []string{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "val_top5", "test_top5", "binary_layers", "all_binary", "lr", "seconds", "img_per_s", "flip_ratio"}

// MetricsCSV renders the history as CSV with a header row.
func MetricsCSV(history []EpochMetrics) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(csvHeader)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 8, 64) }
	for _, m := range history {
		w.Write([]string{strconv.Itoa(m.Epoch), f(m.TrainLoss), f(m.TrainAcc), f(m.ValLoss), f(m.ValAcc), f(m.TestLoss), f(m.TestAcc), f(m.ValTop5), f(m.TestTop5),
			strings.Join(m.BinaryLayers, "+"), strconv.FormatBool(m.AllBinary), f(m.LR), f(m.Seconds), f(m.ImgPerSec), f(m.FlipRatio)})
	}
	w.Flush()
	return buf.Bytes()
}

// MetricsJSONL renders the history as one JSON object per line.
func MetricsJSONL(history []EpochMetrics) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, m := range history {
		enc.Encode(m)
	}
	return buf.Bytes()
}

// Pick is one epoch's result chosen by a rule.
type Pick struct {
	Epoch   int     `json:"epoch"`
	TestAcc float64 `json:"test_acc"`
	ValAcc  float64 `json:"val_acc"`
}

// Summary is what a run reports. A binary-weight network's accuracy counts
// only from epochs in which every layer is binary: the headline is the test
// accuracy at the epoch of best validation accuracy among those epochs (or
// among all epochs of a float run). BestTest is the best test accuracy over
// any epoch, what the paper's scripts print, for comparison only.
type Summary struct {
	Mode string `json:"mode"`
	// Headline is nil when no epoch was eligible (an iterative run too short
	// to binarize every layer).
	Headline *Pick `json:"headline"`
	// HeadlineRule says which epochs the headline was picked from.
	HeadlineRule string `json:"headline_rule"`
	BestTest     Pick   `json:"best_test_any_epoch"`
	Final        Pick   `json:"final"`
	Epochs       int    `json:"epochs"`
}

// Summarize picks the headline, best and final results from a history.
func Summarize(mode string, history []EpochMetrics) Summary {
	s := Summary{Mode: mode, Epochs: len(history)}
	if mode == "float" {
		s.HeadlineRule = "float model: test accuracy at the epoch of best validation accuracy"
	} else {
		s.HeadlineRule = "test accuracy at the epoch of best validation accuracy among fully-binary epochs"
	}
	for i, m := range history {
		p := Pick{Epoch: m.Epoch, TestAcc: m.TestAcc, ValAcc: m.ValAcc}
		if (mode == "float" || m.AllBinary) && (s.Headline == nil || m.ValAcc > s.Headline.ValAcc) {
			s.Headline = &p
		}
		if i == 0 || m.TestAcc > s.BestTest.TestAcc {
			s.BestTest = p
		}
		s.Final = p
	}
	return s
}

// WriteTable prints the summary as a small table. Epochs are numbered
// from 0, as in the metrics files.
func (s Summary) WriteTable(w io.Writer, run string) {
	pct := func(v float64) string { return fmt.Sprintf("%7.2f%%", 100*v) }
	row := func(label string, p Pick) {
		fmt.Fprintf(w, "  %-40s %s  %5d  %s\n", label, pct(p.TestAcc), p.Epoch, pct(p.ValAcc))
	}
	fmt.Fprintf(w, "\nResult of %s (%s, %d epochs)\n", run, s.Mode, s.Epochs)
	fmt.Fprintf(w, "  %-40s %8s  %5s  %8s\n", "", "test acc", "epoch", "val acc")
	if s.Headline != nil {
		row("headline*", *s.Headline)
	} else {
		fmt.Fprintf(w, "  %-40s none: no epoch had every layer binary; raise train.epochs\n", "headline*")
	}
	row("best test, any epoch (paper scripts)", s.BestTest)
	row("final epoch", s.Final)
	fmt.Fprintf(w, "  * %s\n", s.HeadlineRule)
}
