package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"iterbin/loaders"
	"iterbin/trainer"
)

// runSummary prints per-layer and total sizes of a configuration's model
// (as its schedule leaves it) or of a trained checkpoint.
func runSummary(pos, sets []string, stdout io.Writer) error {
	if len(pos) != 1 {
		return errors.New("usage: iterbin summary FILE.toml | RUN_DIR | CHECKPOINT")
	}
	var s *trainer.SizeSummary
	var err error
	if strings.HasSuffix(pos[0], ".toml") {
		var cfg *trainer.Config
		if cfg, err = trainer.LoadConfig(pos[0], sets); err != nil {
			return err
		}
		s, err = trainer.SummarizeConfig(cfg)
	} else {
		s, err = trainer.SummarizeCheckpoint(pos[0])
	}
	if err != nil {
		return err
	}
	printSize(stdout, s)
	return nil
}

func printSize(w io.Writer, s *trainer.SizeSummary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layer\tshape\tweights\tbits\tmemory\tMACs/sample\tbinary\t")
	for _, l := range s.Layers {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%s\t%d\t%v\t\n", l.Name, l.Shape, l.Weights, l.Bits, bytesText(l.Bytes), l.MACs, l.Binary)
	}
	fmt.Fprintf(tw, "float parameters\t(biases, batch norm)\t%d\t32\t%s\t\t\t\n", s.FloatParams, bytesText(4*s.FloatParams))
	tw.Flush()
	fmt.Fprintf(w, "\nmodel size         %s (packed weights and float parameters; the exported file is %s with its header)\n", bytesText(s.PayloadBytes), bytesText(s.FileBytes))
	fmt.Fprintf(w, "float32 equivalent %s\n", bytesText(s.Float32Bytes))
	fmt.Fprintf(w, "compression        %.1f×\n", s.Compression)
	fmt.Fprintf(w, "binary MACs        %.2f%% of %s's multiply-accumulates use binary weights\n", 100*s.BinaryMACShare, s.Arch)
}

func bytesText(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB (%d B)", float64(n)/(1<<20), n)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB (%d B)", float64(n)/(1<<10), n)
	}
	return fmt.Sprintf("%d B", n)
}

func runExport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("iterbin export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "the model file to write")
	allowFloat := fs.Bool("allow-float", false, "store binarizable layers that are not binary as float32 instead of refusing")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		return errors.New("usage: iterbin export RUN_DIR|CHECKPOINT -o FILE [--allow-float]")
	}
	s, err := trainer.Export(pos[0], *out, *allowFloat)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %s (float32 model: %s, %.1f× smaller)\n", *out, bytesText(s.FileBytes), bytesText(s.Float32Bytes), s.Compression)
	return nil
}

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("iterbin eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", "", "read the dataset from this folder (default: where the dataset is found by default)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: iterbin eval MODEL_FILE [--data-dir DIR]")
	}
	data := trainer.Default().Data
	data.Dir = *dir
	res, h, err := trainer.EvalExport(ctx, pos[0], &data)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s (%s on %s, epoch %d): test loss %.4f, test accuracy %.2f%% on %d images\n",
		pos[0], h.Arch, h.Dataset, h.Epoch, res.Loss, 100*res.Acc, len(res.Predictions))
	return nil
}

func runReport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("iterbin report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "report", "folder for report.md, report.csv and the SVG plots")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	md, err := trainer.WriteReport(pos, *out)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, md)
	fmt.Fprintf(stdout, "\nwrote %s/report.md, report.csv, accuracy.svg (and sensitivity.svg for guided runs)\n", *out)
	return nil
}

func runData(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("iterbin data", flag.ContinueOnError)
	fs.SetOutput(stderr)
	short := fs.Int("short-side", 256, "resize each image so its shorter side has this many pixels")
	shard := fs.Int("shard-size", 1024, "images per shard file")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 || pos[0] != "pack" {
		return errors.New("usage: iterbin data pack SRC DST [--short-side 256] [--shard-size 1024]")
	}
	if *short < 8 || *shard < 1 {
		return errors.New("data pack: --short-side must be at least 8 and --shard-size at least 1")
	}
	idx, err := loaders.PackImageFolder(pos[1], pos[2], *short, *shard, stderr)
	if err != nil {
		return err
	}
	for _, split := range []string{"train", "val"} {
		if ps, ok := idx.Splits[split]; ok {
			n := 0
			for _, c := range ps.Counts {
				n += c
			}
			fmt.Fprintf(stdout, "%s: %d images in %d shards\n", split, n, len(ps.Shards))
		}
	}
	fmt.Fprintf(stdout, "%d classes, %d unreadable files left out; use it with data.dir = %q\n", len(idx.Classes), len(idx.Unreadable), pos[2])
	return nil
}
