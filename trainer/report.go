package trainer

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// RunReport is one run folder read back for `iterbin report`.
type RunReport struct {
	Dir     string
	Name    string
	Mode    string
	Order   []string
	Rule    string
	Summary Summary
	History []EpochMetrics
	// BinaryFrom maps each layer of the order to the first epoch it was
	// binary in.
	BinaryFrom map[string]int
	// SensitivityEpochs and SensitivitySeconds are the pre-training a
	// guided run used (0 otherwise).
	SensitivityEpochs  int
	SensitivitySeconds float64
	Ranking            *Ranking
	WallSeconds        float64
	// Planned is the configured number of epochs; fewer in History means
	// the run is unfinished.
	Planned int
}

// TotalEpochs counts the run's epochs and its sensitivity pre-training.
func (r *RunReport) TotalEpochs() int { return len(r.History) + r.SensitivityEpochs }

// LoadRunReport reads a run folder: its configuration, run.json and
// metrics; a guided run's sensitivity ranking too.
func LoadRunReport(dir string) (*RunReport, error) {
	cfg, err := LoadConfig(filepath.Join(dir, ConfigFile), nil)
	if err != nil {
		return nil, fmt.Errorf("report: %s is not a run folder: %w", dir, err)
	}
	var info RunInfo
	js, err := os.ReadFile(filepath.Join(dir, RunInfoFile))
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := json.Unmarshal(js, &info); err != nil {
		return nil, fmt.Errorf("report: %s: %v", filepath.Join(dir, RunInfoFile), err)
	}
	history, err := readMetricsJSONL(filepath.Join(dir, MetricsJSONLFile))
	if err != nil {
		return nil, err
	}
	if len(history) == 0 {
		return nil, fmt.Errorf("report: %s has no finished epoch", dir)
	}
	r := &RunReport{Dir: dir, Name: cfg.Run.Name, Mode: cfg.Binarize.Mode, Order: info.Order, Rule: info.OrderRule,
		History: history, Summary: Summarize(cfg.Binarize.Mode, history), BinaryFrom: map[string]int{}, Planned: cfg.Train.Epochs}
	for _, m := range history {
		r.WallSeconds += m.Seconds
		for _, l := range m.BinaryLayers {
			if _, ok := r.BinaryFrom[l]; !ok {
				r.BinaryFrom[l] = m.Epoch
			}
		}
	}
	if info.SensitivityFile != "" {
		rk, err := readRanking(info.SensitivityFile, cfg.SensitivityFingerprint())
		if err == nil && rk == nil {
			err = fmt.Errorf("its sensitivity ranking %s is missing", info.SensitivityFile)
		}
		if err != nil {
			return nil, fmt.Errorf("report: %s: %w", dir, err)
		}
		if rk != nil {
			r.Ranking = rk
			r.SensitivityEpochs = rk.Epochs * len(rk.Layers)
			for _, l := range rk.Layers {
				r.SensitivitySeconds += l.Seconds
			}
		}
	}
	return r, nil
}

func readMetricsJSONL(path string) ([]EpochMetrics, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	defer f.Close()
	var out []EpochMetrics
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for line := 1; sc.Scan(); line++ {
		var m EpochMetrics
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("report: %s:%d: %v", path, line, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// sortRuns orders runs as the paper's tables do: float, fully binary,
// then the iterative orders by name.
func sortRuns(runs []*RunReport) {
	rank := map[string]int{"float": 0, "binary": 1, "iterative": 2}
	sort.SliceStable(runs, func(i, j int) bool {
		if rank[runs[i].Mode] != rank[runs[j].Mode] {
			return rank[runs[i].Mode] < rank[runs[j].Mode]
		}
		return runs[i].Name < runs[j].Name
	})
}

func (r *RunReport) orderText() string {
	switch r.Mode {
	case "float":
		return "float"
	case "binary":
		return "all binary"
	}
	return r.Rule + ": " + strings.Join(r.Order, "→")
}

func pct(v float64) string { return strconv.FormatFloat(100*v, 'f', 2, 64) }

func duration(secs float64) string {
	return (time.Duration(secs) * time.Second).String()
}

// reportRows renders each run as the table's cells.
func reportRows(runs []*RunReport) (header []string, rows [][]string) {
	header = []string{"run", "order", "headline test acc % (epoch)", "best test acc %, any epoch (epoch)", "final test acc %", "epochs (with sensitivity)", "wall time"}
	for _, r := range runs {
		name := r.Name
		if len(r.History) < r.Planned {
			name = fmt.Sprintf("%s (unfinished: %d of %d epochs)", r.Name, len(r.History), r.Planned)
		}
		head := "none (never fully binary)"
		if h := r.Summary.Headline; h != nil {
			head = fmt.Sprintf("%s (%d)", pct(h.TestAcc), h.Epoch)
		}
		rows = append(rows, []string{name, r.orderText(), head,
			fmt.Sprintf("%s (%d)", pct(r.Summary.BestTest.TestAcc), r.Summary.BestTest.Epoch),
			pct(r.Summary.Final.TestAcc),
			fmt.Sprintf("%d (%d)", len(r.History), r.TotalEpochs()),
			duration(r.WallSeconds + r.SensitivitySeconds)})
	}
	return header, rows
}

// ReportMarkdown is the comparison table in Markdown.
func ReportMarkdown(runs []*RunReport) string {
	header, rows := reportRows(runs)
	var b strings.Builder
	b.WriteString("| " + strings.Join(header, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat(" --- |", len(header)) + "\n")
	for _, row := range rows {
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	b.WriteString("\nHeadline: test accuracy at the epoch of best validation accuracy among fully-binary epochs (all epochs for float runs). " +
		"Best test accuracy over any epoch is what the paper's scripts print, for comparison only. Epochs are numbered from 0.\n")
	return b.String()
}

// ReportCSV is the same table as CSV, with plain numbers.
func ReportCSV(runs []*RunReport) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"run", "dir", "mode", "order", "headline_test_acc", "headline_epoch", "best_test_acc_any_epoch", "best_epoch", "final_test_acc", "epochs", "epochs_with_sensitivity", "wall_seconds"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 8, 64) }
	for _, r := range runs {
		ha, he := "", ""
		if h := r.Summary.Headline; h != nil {
			ha, he = f(h.TestAcc), strconv.Itoa(h.Epoch)
		}
		w.Write([]string{r.Name, r.Dir, r.Mode, strings.Join(r.Order, " "), ha, he, f(r.Summary.BestTest.TestAcc),
			strconv.Itoa(r.Summary.BestTest.Epoch), f(r.Summary.Final.TestAcc), strconv.Itoa(len(r.History)),
			strconv.Itoa(r.TotalEpochs()), f(r.WallSeconds + r.SensitivitySeconds)})
	}
	w.Flush()
	return buf.Bytes()
}

// AccuracyPlot draws test accuracy per epoch, one line per run, with a
// marker where each layer became binary.
func AccuracyPlot(runs []*RunReport, path string) error {
	p := plot.New()
	p.Title.Text = "Test accuracy per epoch (markers: a layer becomes binary)"
	p.X.Label.Text = "epoch"
	p.Y.Label.Text = "test accuracy (%)"
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(10), -vg.Points(6)
	for i, r := range runs {
		pts := make(plotter.XYs, len(r.History))
		for j, m := range r.History {
			pts[j].X, pts[j].Y = float64(m.Epoch), 100*m.TestAcc
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i / 7)
		p.Add(line)
		p.Legend.Add(r.Name, line)
		var marks plotter.XYs
		for _, l := range r.Order {
			e, ok := r.BinaryFrom[l]
			if !ok || r.Mode != "iterative" {
				continue
			}
			for _, m := range r.History {
				if m.Epoch == e {
					marks = append(marks, plotter.XY{X: float64(e), Y: 100 * m.TestAcc})
				}
			}
		}
		if len(marks) > 0 {
			sc, err := plotter.NewScatter(marks)
			if err != nil {
				return err
			}
			sc.GlyphStyle.Color = plotutil.Color(i)
			sc.GlyphStyle.Shape = draw.CircleGlyph{}
			sc.GlyphStyle.Radius = vg.Points(3)
			p.Add(sc)
		}
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// SensitivityPlot draws a ranking's best validation accuracy per layer,
// in forward order.
func SensitivityPlot(r *Ranking, path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Sensitivity pre-training (%d epochs, one layer binary)", r.Epochs)
	p.Y.Label.Text = "best validation accuracy (%)"
	values := make(plotter.Values, len(r.Layers))
	names := make([]string, len(r.Layers))
	lowest, highest := math.Inf(1), math.Inf(-1)
	for i, l := range r.Layers {
		values[i], names[i] = 100*l.BestValAcc, l.Layer
		lowest, highest = math.Min(lowest, values[i]), math.Max(highest, values[i])
	}
	bars, err := plotter.NewBarChart(values, vg.Points(36))
	if err != nil {
		return err
	}
	bars.Color = plotutil.Color(0)
	p.Add(bars)
	p.NominalX(names...)
	// Zoom on the differences: the axis starts a little below the lowest bar.
	p.Y.Min = math.Max(0, lowest-math.Max(1, (highest-lowest)/2))
	p.Y.Max = highest + math.Max(0.2, (highest-lowest)/10)
	width := vg.Length(max(8, len(names))) * vg.Inch * 3 / 4
	return p.Save(width, 4*vg.Inch, path)
}

// WriteReport writes report.md, report.csv, accuracy.svg and, when a run
// has a sensitivity ranking, sensitivity.svg into outDir, and returns the
// Markdown table.
func WriteReport(dirs []string, outDir string) (string, error) {
	if len(dirs) == 0 {
		return "", errors.New("report: no run folders given")
	}
	var runs []*RunReport
	for _, d := range dirs {
		r, err := LoadRunReport(d)
		if err != nil {
			return "", err
		}
		runs = append(runs, r)
	}
	sortRuns(runs)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	md := ReportMarkdown(runs)
	if err := WriteFileAtomic(filepath.Join(outDir, "report.md"), []byte(md)); err != nil {
		return "", err
	}
	if err := WriteFileAtomic(filepath.Join(outDir, "report.csv"), ReportCSV(runs)); err != nil {
		return "", err
	}
	if err := AccuracyPlot(runs, filepath.Join(outDir, "accuracy.svg")); err != nil {
		return "", fmt.Errorf("report: accuracy plot: %w", err)
	}
	for _, r := range runs {
		if r.Ranking != nil && len(r.Ranking.Layers) > 0 {
			if err := SensitivityPlot(r.Ranking, filepath.Join(outDir, "sensitivity.svg")); err != nil {
				return "", fmt.Errorf("report: sensitivity plot: %w", err)
			}
			break
		}
	}
	return md, nil
}
