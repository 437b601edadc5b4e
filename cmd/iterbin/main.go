// Command iterbin trains binary-weight networks by iterative layer
// binarization. Run `iterbin help` for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"iterbin/loaders"
	"iterbin/trainer"
)

const usage = `iterbin trains binary-weight networks by iterative layer binarization.

Usage:
  iterbin run FILE.toml [-set section.key=value]...   train a new run
  iterbin run --resume RUN_DIR                        continue a stopped run
  iterbin sensitivity FILE.toml [-set ...]            sensitivity pre-training (ranking for guided orders)
  iterbin layers FILE.toml [-set ...]                 names and sizes of the binarizable layers
  iterbin validate FILE.toml [-set ...]               check a configuration and print it resolved
  iterbin download mnist DIR                          fetch MNIST from its usual mirrors, checksums verified
  iterbin summary FILE.toml | RUN_DIR                 per-layer bits, memory, MACs; model size and compression
  iterbin export RUN_DIR -o FILE [--allow-float]      write the trained model with binary layers packed 1 bit a weight
  iterbin eval FILE [--data-dir DIR]                  evaluate an exported model on the test split (CPU)
  iterbin report RUN_DIR... [-o DIR]                  compare runs: Markdown and CSV table, SVG plots
  iterbin bench [--models m,...] [--modes float,binary] [--anchor torch_anchor.py]
                                                      training img/s on synthetic data, PyTorch beside it
  iterbin data pack SRC DST [--short-side 256]         pack an ImageNet-style folder (train/, val/) into shards
  iterbin download cifar10 DIR                        fetch and unpack CIFAR-10's binary release, checksum verified

-set overrides one key, e.g. -set train.lr=0.01 -set binarize.order=reverse;
it may be given several times. The README documents every key.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "iterbin:", err)
		os.Exit(1)
	}
}

// setFlags collects repeated -set values.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, " ") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

// parse parses flags placed anywhere among the positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "bench":
		return runBench(ctx, args, stdout, stderr)
	case "export":
		return runExport(args, stdout, stderr)
	case "eval":
		return runEval(ctx, args, stdout, stderr)
	case "report":
		return runReport(args, stdout, stderr)
	case "data":
		return runData(args, stdout, stderr)
	}
	fs := flag.NewFlagSet("iterbin "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sets setFlags
	fs.Var(&sets, "set", "override a configuration key: section.key=value (repeatable)")
	resume := ""
	if cmd == "run" {
		fs.StringVar(&resume, "resume", "", "continue the run in this folder")
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	opts := trainer.Options{Out: stdout}
	if f, ok := stderr.(*os.File); ok {
		opts.Progress = trainer.NewProgress(f)
	}
	loadOne := func() (*trainer.Config, error) {
		if len(pos) != 1 {
			return nil, fmt.Errorf("%s needs exactly one FILE.toml, got %d arguments (see iterbin help)", cmd, len(pos))
		}
		return trainer.LoadConfig(pos[0], sets)
	}
	switch cmd {
	case "run":
		if resume != "" {
			if len(pos) > 0 || len(sets) > 0 {
				return errors.New("run --resume takes only the run folder: the configuration is the one saved there")
			}
			_, err := trainer.Resume(ctx, resume, opts)
			return err
		}
		cfg, err := loadOne()
		if err != nil {
			return err
		}
		_, err = trainer.Run(ctx, cfg, opts)
		return err
	case "sensitivity":
		cfg, err := loadOne()
		if err != nil {
			return err
		}
		_, _, err = trainer.RunSensitivity(ctx, cfg, opts)
		return err
	case "layers":
		cfg, err := loadOne()
		if err != nil {
			return err
		}
		return printLayers(cfg, stdout)
	case "validate":
		cfg, err := loadOne()
		if err != nil {
			return err
		}
		if err := checkOrder(cfg); err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		text, err := cfg.Encode()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# %s is valid; resolved configuration:\n%s", pos[0], text)
		return nil
	case "summary":
		return runSummary(pos, sets, stdout)
	case "download":
		if len(pos) != 2 || (pos[0] != "mnist" && pos[0] != "cifar10") {
			return errors.New("usage: iterbin download mnist|cifar10 DIR")
		}
		var err error
		if pos[0] == "mnist" {
			err = loaders.Download(ctx, http.DefaultClient, pos[1], loaders.MNISTMirrors(), loaders.MNISTFiles(), stdout)
		} else {
			err = loaders.DownloadCIFAR10(ctx, http.DefaultClient, pos[1], loaders.CIFAR10Mirrors(), loaders.CIFAR10Archive(), stdout)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s is in %s; use it with data.dir = %q\n", pos[0], pos[1], pos[1])
		return nil
	}
	return fmt.Errorf("unknown command %q (see iterbin help)", cmd)
}

// checkOrder verifies an explicit order against the model's layers.
func checkOrder(cfg *trainer.Config) error {
	if cfg.Binarize.Order.Rule != "" {
		return nil
	}
	layers, err := trainer.Describe(cfg)
	if err != nil {
		return err
	}
	var names []string
	for _, l := range layers {
		names = append(names, l.Name)
	}
	_, err = trainer.ResolveOrder(cfg.Binarize.Order, names, cfg.Run.Seed, nil)
	if err != nil {
		return fmt.Errorf("key binarize.order: %w", err)
	}
	return nil
}

func printLayers(cfg *trainer.Config, w io.Writer) error {
	layers, err := trainer.Describe(cfg)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\tlayer\tshape\tweights\tMACs/sample\t")
	total := 0
	for i, l := range layers {
		fmt.Fprintf(tw, "%d\t%s\t%v\t%d\t%d\t\n", i+1, l.Name, l.Shape, l.Weights, l.MACs)
		total += l.Weights
	}
	fmt.Fprintf(tw, "\ttotal\t\t%d\t\t\n", total)
	return tw.Flush()
}
