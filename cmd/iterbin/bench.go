package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"iterbin/trainer"
)

// anchorResult is one line of the PyTorch anchor script's output.
type anchorResult struct {
	Model     string  `json:"model"`
	Mode      string  `json:"mode"`
	Batch     int     `json:"batch"`
	ImgPerSec float64 `json:"img_per_s"`
	Torch     string  `json:"torch"`
}

// openBLASDir is Debian's pthread OpenBLAS; PyTorch's anchor runs with it
// first on the loader path (Debian's python3-torch otherwise uses the
// reference BLAS).
const openBLASDir = "/usr/lib/x86_64-linux-gnu/openblas-pthread"

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("iterbin bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	device := fs.String("device", "cpu", "device to benchmark")
	modelList := fs.String("models", "mlp300,mlp784,vgg5,resnet20", "models, comma-separated (also resnet18, ImageNet-sized)")
	modeList := fs.String("modes", "float,binary", "modes, comma-separated")
	precision := fs.String("precision", "fp32", "fp32, or on CUDA tf32 (TF32 tensor cores), bf16 (bf16 GEMM and convolution inputs, fp32 accumulation) or fp16 (the same in fp16, with dynamic loss scaling); passed to the anchor as --precisions (fp16 has no anchor)")
	layout := fs.String("layout", "auto", "on CUDA, how convolutional activations are stored: auto (channels-last where cuDNN runs at tf32, bf16 or fp16, in 16 bits at bf16 and fp16), nhwc, nchw (float32), or channels-last in 16 bits: nhwc-bf16 at precision bf16, nhwc-fp16 at fp16")
	steps := fs.Int("steps", 0, "timed steps per model and mode (default: 200 for the MLPs, whose steps take milliseconds, 20 for the others)")
	warmup := fs.Int("warmup", 3, "untimed steps first")
	rounds := fs.Int("rounds", 1, "rounds of the whole table (iterbin, then PyTorch); each figure is the median over rounds, which steadies ratios on a noisy machine")
	anchor := fs.String("anchor", "", "path of torch_anchor.py: also measure PyTorch on the same machine in this run")
	profile := fs.Bool("profile", false, "instead of throughput, print where a step's time goes (over --steps steps after --warmup): on CUDA each op's time on the device, from events around it; elsewhere each op timed with the device waited for after it")
	python := fs.String("python", "", "the python3 with torch to run the anchor (default: the first of python3, /usr/bin/python3, /opt/torch/.venv/bin/python3 that imports torch)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	known := map[string]trainer.BenchModel{}
	for _, m := range trainer.BenchModels() {
		known[m.Name] = m
	}
	var models []trainer.BenchModel
	for _, name := range strings.Split(*modelList, ",") {
		m, ok := known[name]
		if !ok {
			return fmt.Errorf("bench: unknown model %q (use mlp300, mlp784, vgg5, resnet20, resnet18)", name)
		}
		models = append(models, m)
	}
	modes := strings.Split(*modeList, ",")
	for _, mode := range modes {
		if mode != "float" && mode != "binary" {
			return fmt.Errorf("bench: unknown mode %q (use float, binary)", mode)
		}
	}
	if *rounds < 1 {
		return fmt.Errorf("bench: --rounds %d: use 1 or more", *rounds)
	}
	stepsFor := func(m trainer.BenchModel) int {
		switch {
		case *steps > 0:
			return *steps
		case m.Arch == "mlp":
			return 200
		}
		return 20
	}
	if *profile {
		for _, m := range models {
			for _, mode := range modes {
				if err := ctx.Err(); err != nil {
					return err
				}
				p, err := trainer.ProfileStep(m, mode, *device, *precision, *layout, *warmup, stepsFor(m))
				if err != nil {
					return err
				}
				printProfile(stdout, p)
			}
		}
		return nil
	}
	// Figures per model/mode over the rounds, iterbin's and PyTorch's.
	ours := map[string][]trainer.BenchResult{}
	theirs := map[string][]anchorResult{}
	torchNote := "PyTorch: not measured (pass --anchor PATH/torch_anchor.py with a python3 that has torch)"
	for round := 0; round < *rounds; round++ {
		for _, m := range models {
			for _, mode := range modes {
				if err := ctx.Err(); err != nil {
					return err
				}
				r, err := trainer.BenchStep(m, mode, *device, *precision, *layout, *warmup, stepsFor(m))
				if err != nil {
					return err
				}
				fmt.Fprintf(stderr, "iterbin %s %s: %.1f img/s\n", m.Name, mode, r.ImgPerSec)
				ours[m.Name+"/"+mode] = append(ours[m.Name+"/"+mode], r)
			}
		}
		if *anchor == "" {
			continue
		}
		if *precision == "fp16" {
			// The anchor's autocast is bf16 only: at fp16 it would time fp32.
			torchNote = "PyTorch: not measured: the anchor script has no fp16 (its autocast is bf16 only)"
			*anchor = ""
			continue
		}
		// One anchor run per step count, so PyTorch times as many steps.
		bySteps := map[int][]trainer.BenchModel{}
		var counts []int
		for _, m := range models {
			n := stepsFor(m)
			if bySteps[n] == nil {
				counts = append(counts, n)
			}
			bySteps[n] = append(bySteps[n], m)
		}
		for _, n := range counts {
			rs, note, err := runAnchor(ctx, *python, *anchor, *device, *precision, bySteps[n], modes, n, *warmup, stderr)
			if err != nil {
				torchNote = "PyTorch: not measured: " + err.Error()
				*anchor = ""
				break
			}
			torchNote = note
			for _, r := range rs {
				theirs[r.Model+"/"+r.Mode] = append(theirs[r.Model+"/"+r.Mode], r)
			}
		}
	}
	var results []trainer.BenchResult
	torch := map[string]anchorResult{}
	for _, m := range models {
		for _, mode := range modes {
			key := m.Name + "/" + mode
			results = append(results, medianBy(ours[key], func(r trainer.BenchResult) float64 { return r.ImgPerSec }))
			if rs := theirs[key]; len(rs) > 0 {
				torch[key] = medianBy(rs, func(r anchorResult) float64 { return r.ImgPerSec })
			}
		}
	}
	if len(results) > 0 {
		fmt.Fprintf(stdout, "iterbin backend: %s, precision %s\n%s\n", results[0].Backend, *precision, torchNote)
		if *rounds > 1 {
			fmt.Fprintf(stdout, "median of %d rounds, each iterbin then PyTorch\n", *rounds)
		}
		fmt.Fprintln(stdout)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tmode\tbatch\titerbin img/s\tPyTorch img/s\titerbin/PyTorch\tallocs/step\t")
	for _, r := range results {
		pt, ratio := "-", "-"
		if a, ok := torch[r.Model+"/"+r.Mode]; ok && a.ImgPerSec > 0 {
			pt, ratio = fmt.Sprintf("%.1f", a.ImgPerSec), fmt.Sprintf("%.2f", r.ImgPerSec/a.ImgPerSec)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%s\t%s\t%.1f\t\n", r.Model, r.Mode, r.Batch, r.ImgPerSec, pt, ratio, r.AllocsPerStep)
	}
	return tw.Flush()
}

// anchorLauncher loads the anchor script given as its first argument, adds
// the MLP 784-784-784-10 (which the script does not list) built by the
// script's own mlp(), and runs the script's main with the other arguments.
const anchorLauncher = `import importlib.util, sys
spec = importlib.util.spec_from_file_location("torch_anchor", sys.argv[1])
anchor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(anchor)
anchor.MODELS.setdefault("mlp784", (lambda: anchor.mlp((784, 784)), (1, 28, 28), 10, 100, "adam"))
sys.argv = sys.argv[1:]
anchor.main()
`

// runAnchor runs the PyTorch anchor script (through anchorLauncher) for
// the models, with Debian's pthread OpenBLAS first on the loader path for
// that command only.
func runAnchor(ctx context.Context, python, script, device, precision string, models []trainer.BenchModel, modes []string, steps, warmup int, stderr io.Writer) ([]anchorResult, string, error) {
	if python == "" {
		var err error
		if python, err = pythonWithTorch(ctx); err != nil {
			return nil, "", err
		}
	}
	var names []string
	mlpsOnly := true
	for _, m := range models {
		names = append(names, m.Name)
		mlpsOnly = mlpsOnly && m.Arch == "mlp"
	}
	torchDevice := device
	if strings.HasPrefix(device, "cuda") {
		torchDevice = "cuda" // the anchor script takes a torch device type
	}
	args := []string{"-c", anchorLauncher, script, "--device", torchDevice, "--models", strings.Join(names, ","),
		"--precisions", precision, "--modes", strings.Join(modes, ","), "--steps", fmt.Sprint(steps), "--warmup", fmt.Sprint(warmup)}
	if mlpsOnly {
		args = append(args, "--no-channels-last") // flat inputs: as the script runs mlp300
	}
	cmd := exec.CommandContext(ctx, python, args...)
	// The same thread count as iterbin's workers (Debian's torch would
	// otherwise pick one intra-op thread here).
	threads := runtime.GOMAXPROCS(0)
	cmd.Env = append(os.Environ(), fmt.Sprintf("OMP_NUM_THREADS=%d", threads))
	blas := "reference BLAS"
	if _, err := os.Stat(openBLASDir); err == nil {
		cmd.Env = append(cmd.Env, "LD_LIBRARY_PATH="+openBLASDir+":"+os.Getenv("LD_LIBRARY_PATH"))
		blas = "OpenBLAS (pthread)"
	}
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: %v", python, script, err)
	}
	var rs []anchorResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r anchorResult
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Model != "" {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return nil, "", fmt.Errorf("%s printed no results", script)
	}
	return rs, fmt.Sprintf("PyTorch %s (%s, %d threads, %s, same machine, same run)", rs[0].Torch, blas, threads, precision), nil
}

// pythonWithTorch finds a python3 that imports torch.
func pythonWithTorch(ctx context.Context) (string, error) {
	for _, p := range []string{"python3", "/usr/bin/python3", "/opt/torch/.venv/bin/python3"} {
		if exec.CommandContext(ctx, p, "-c", "import torch").Run() == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no python3 with torch (Debian: apt-get install python3-torch libopenblas0-pthread)")
}

// medianBy returns the element of rs with the median key (the lower
// middle one for an even count).
func medianBy[R any](rs []R, key func(R) float64) R {
	sorted := append([]R(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return key(sorted[i]) < key(sorted[j]) })
	return sorted[(len(sorted)-1)/2]
}

// printProfile writes where a step's time goes, most time first; ops below
// 0.2% are summed in one line.
func printProfile(w io.Writer, p trainer.StepProfile) {
	var total time.Duration
	for _, r := range p.Ops {
		total += r.Total
	}
	steps := float64(p.Steps)
	perStep := func(d time.Duration) float64 { return d.Seconds() * 1000 / steps }
	if p.DeviceTimes {
		fmt.Fprintf(w, "\n%s %s, precision %s, %s: %.3f ms a step in the table (each op's time on the device, from events around it, read at the step's end; host stages by the wall clock), %.3f ms a step by the wall clock with the batch filled in line (%d steps)\n",
			p.Model, p.Mode, p.Precision, p.Backend, perStep(total), perStep(p.Wall), p.Steps)
	} else {
		fmt.Fprintf(w, "\n%s %s, precision %s, %s: %.3f ms a step with the device waited for after every op (%d steps)\n",
			p.Model, p.Mode, p.Precision, p.Backend, perStep(total), p.Steps)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "op\tcalls/step\tms/step\tshare\t")
	var rest time.Duration
	restOps := 0
	for _, r := range p.Ops {
		if total > 0 && float64(r.Total) < 0.002*float64(total) {
			rest += r.Total
			restOps++
			continue
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%.1f%%\t\n", r.Op, float64(r.Calls)/steps, perStep(r.Total), 100*float64(r.Total)/float64(total))
	}
	if restOps > 0 {
		fmt.Fprintf(tw, "%d smaller ops\t\t%.3f\t%.1f%%\t\n", restOps, perStep(rest), 100*float64(rest)/float64(total))
	}
	tw.Flush()
	if len(p.ConvChoices) > 0 {
		fmt.Fprintln(w, "\nhow each convolution runs:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, c := range p.ConvChoices {
			fmt.Fprintf(tw, "%s\t%s\n", c.Op, c.How)
		}
		tw.Flush()
	}
}
