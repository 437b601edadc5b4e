package trainer

import (
	"encoding/json"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// writeRun writes a run folder as a run leaves it, with fixed numbers.
func writeRun(t *testing.T, dir, name, mode string, order []string, acc []float64) string {
	t.Helper()
	cfg := Default()
	cfg.Run.Name = name
	cfg.Binarize.Mode = mode
	cfg.Binarize.EpochsPerLayer = 1
	cfg.Train.Epochs = len(acc)
	run := filepath.Join(dir, name)
	os.MkdirAll(run, 0o755)
	text, _ := cfg.Encode()
	os.WriteFile(filepath.Join(run, ConfigFile), text, 0o644)
	sched := Schedule{Mode: mode, Order: order, EpochsPerLayer: 1}
	info, _ := json.Marshal(RunInfo{Name: name, Order: order, OrderRule: cfg.Binarize.Order.String(), Layers: []string{"fc1", "fc2", "fc3"}})
	os.WriteFile(filepath.Join(run, RunInfoFile), info, 0o644)
	var history []EpochMetrics
	for e, a := range acc {
		history = append(history, EpochMetrics{Epoch: e, TestAcc: a, ValAcc: a + 0.001*float64(e%2), BinaryLayers: sched.BinaryAt(e),
			AllBinary: sched.AllBinaryAt(e, 3), Seconds: 61})
	}
	os.WriteFile(filepath.Join(run, MetricsJSONLFile), MetricsJSONL(history), 0o644)
	return run
}

func TestReportOfTwoRunsMatchesGolden(t *testing.T) {
	dir := t.TempDir()
	fwd := writeRun(t, dir, "mnist-forward", "iterative", []string{"fc1", "fc2", "fc3"}, []float64{0.90, 0.95, 0.97, 0.96, 0.975})
	flt := writeRun(t, dir, "mnist-float", "float", []string{"fc1", "fc2", "fc3"}, []float64{0.96, 0.98, 0.981})
	out := filepath.Join(dir, "report")
	md, err := WriteReport([]string{fwd, flt}, out)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report.golden.md")
	if *update {
		os.WriteFile(golden, []byte(md), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to create it)", err)
	}
	if md != string(want) {
		t.Errorf("report differs from %s:\n%s", golden, md)
	}
	for _, f := range []string{"report.md", "report.csv", "accuracy.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("report lacks %s", f)
		}
	}
	csv, _ := os.ReadFile(filepath.Join(out, "report.csv"))
	if lines := strings.Count(string(csv), "\n"); lines != 3 {
		t.Errorf("report.csv has %d lines, want a header and 2 runs", lines)
	}
	// The SVG parses as XML and its legend names each run once.
	f, _ := os.Open(filepath.Join(out, "accuracy.svg"))
	defer f.Close()
	texts := map[string]int{}
	paths := 0
	dec := xml.NewDecoder(f)
	inText := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("accuracy.svg is not XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			inText = tok.Name.Local == "text"
			if tok.Name.Local == "path" {
				paths++
			}
		case xml.CharData:
			if inText {
				texts[strings.TrimSpace(string(tok))]++
			}
		case xml.EndElement:
			inText = false
		}
	}
	for _, name := range []string{"mnist-forward", "mnist-float"} {
		if texts[name] != 1 {
			t.Errorf("accuracy.svg names %s %d times in its legend, want once (texts %v)", name, texts[name], texts)
		}
	}
	if paths < 2 {
		t.Errorf("accuracy.svg has %d paths, want a line per run", paths)
	}
}

func TestSensitivityPlotIsXMLWithABarPerLayer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sensitivity.svg")
	r := &Ranking{Epochs: 2, Layers: []LayerSensitivity{{Layer: "fc1", BestValAcc: 0.97}, {Layer: "fc2", BestValAcc: 0.95}, {Layer: "fc3", BestValAcc: 0.9}}}
	if err := SensitivityPlot(r, path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	var v struct{ XMLName xml.Name }
	if err := xml.Unmarshal(data, &v); err != nil || v.XMLName.Local != "svg" {
		t.Fatalf("sensitivity.svg: %v %v", v.XMLName, err)
	}
	for _, l := range []string{">fc1<", ">fc2<", ">fc3<"} {
		if !strings.Contains(string(data), l) {
			t.Errorf("sensitivity.svg lacks the label %s", l)
		}
	}
}
