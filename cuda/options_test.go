// Runs in both builds: without the cuda tag against the stub, with it
// (on a GPU machine, see parity_test.go) against the backend; New checks
// the precision before it touches a device either way.

package cuda_test

import (
	"fmt"
	"strings"
	"testing"

	"iterbin/cuda"
)

func TestPrecisionValues(t *testing.T) {
	for _, p := range []string{"", cuda.FP32, cuda.TF32, cuda.BF16, cuda.FP16} {
		if err := cuda.CheckPrecision(p); err != nil {
			t.Errorf("CheckPrecision(%q): %v", p, err)
		}
	}
	for p, want := range map[string]string{
		"FP32": `precision "FP32" is not known; use fp32, tf32, bf16 or fp16`,
		"fp64": `precision "fp64" is not known; use fp32, tf32, bf16 or fp16`,
		"FP16": `precision "FP16" is not known; use fp32, tf32, bf16 or fp16`,
	} {
		if err := cuda.CheckPrecision(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckPrecision(%q) = %v, want %q", p, err, want)
		}
		b, err := cuda.New(0, cuda.Options{Precision: p})
		if err == nil {
			b.Close()
			t.Fatalf("New with precision %q succeeded", p)
		}
		if !strings.Contains(err.Error(), "Options.Precision") || !strings.Contains(err.Error(), want) {
			t.Errorf("New with precision %q: %v, want %q", p, err, want)
		}
	}
}

func TestLayoutValues(t *testing.T) {
	for _, l := range []string{"", cuda.LayoutAuto, cuda.NHWC, cuda.NCHW, cuda.NHWCBF16, cuda.NHWCFP16} {
		if err := cuda.CheckLayout(l); err != nil {
			t.Errorf("CheckLayout(%q): %v", l, err)
		}
	}
	for _, l := range []string{"NHWC", "channels_last", "nhcw"} {
		want := `layout "` + l + `" is not known; use auto, nhwc, nchw, nhwc-bf16 (precision bf16) or nhwc-fp16 (precision fp16)`
		if err := cuda.CheckLayout(l); err == nil || err.Error() != want {
			t.Errorf("CheckLayout(%q) = %v, want %q", l, err, want)
		}
		b, err := cuda.New(0, cuda.Options{Layout: l})
		if err == nil {
			b.Close()
			t.Fatalf("New with layout %q succeeded", l)
		}
		if !strings.Contains(err.Error(), "Options.Layout") || !strings.Contains(err.Error(), want) {
			t.Errorf("New with layout %q: %v, want %q", l, err, want)
		}
	}
}

// 16-bit storage is refused before any device is touched where the
// precision is not the storage's format.
func TestHalfStorageNeedsItsPrecision(t *testing.T) {
	for layout, format := range map[string]string{cuda.NHWCBF16: cuda.BF16, cuda.NHWCFP16: cuda.FP16} {
		if got := cuda.StorageFormat(layout); got != format {
			t.Errorf("StorageFormat(%q) = %q, want %q", layout, got, format)
		}
		for _, p := range []string{"", cuda.FP32, cuda.TF32, cuda.BF16, cuda.FP16} {
			if p == format {
				continue
			}
			b, err := cuda.New(0, cuda.Options{Precision: p, Layout: layout})
			if err == nil {
				b.Close()
				t.Fatalf("New with layout %s at precision %q succeeded", layout, p)
			}
			shown := p
			if p == "" {
				shown = cuda.FP32
			}
			want := fmt.Sprintf(`%q stores activations as %s, which needs precision %q, not %q`, layout, format, format, shown)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("New with layout %s at precision %q: %v, want %q", layout, p, err, want)
			}
		}
	}
	for _, l := range []string{"", cuda.LayoutAuto, cuda.NHWC, cuda.NCHW} {
		if got := cuda.StorageFormat(l); got != "" {
			t.Errorf("StorageFormat(%q) = %q, want none (\"\")", l, got)
		}
	}
}
