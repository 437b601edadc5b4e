package trainer

import (
	"fmt"
	"strconv"
	"strings"

	"iterbin/backend"
	"iterbin/backend/cpu"
	"iterbin/cuda"
)

// OpenBackend returns the backend for a run.device value ("cpu", "cuda",
// "cuda:N") in fp32. CUDA needs a build with -tags cuda; the default build
// says so.
func OpenBackend(device string) (backend.Backend, error) {
	return openBackend(device, cuda.FP32, cuda.LayoutAuto)
}

// OpenRunBackend opens the backend a configuration asks for, at its
// run.precision and run.layout; the backend's Name says which precision
// and layout run.
func OpenRunBackend(cfg *Config) (backend.Backend, error) {
	return openBackend(cfg.Run.Device, cfg.Run.Precision, cfg.Run.Layout)
}

// openBackend opens device at precision ("fp32", or on CUDA "tf32",
// "bf16" or "fp16") with its convolutional activations in layout ("auto", "nchw",
// or on CUDA "nhwc", at bf16 "nhwc-bf16" and at fp16 "nhwc-fp16").
func openBackend(device, precision, layout string) (backend.Backend, error) {
	if err := checkPrecision(device, precision); err != nil {
		return nil, fmt.Errorf("precision %w", err)
	}
	if err := checkLayout(device, precision, layout); err != nil {
		return nil, fmt.Errorf("layout %w", err)
	}
	opts := cuda.Options{Precision: precision, Layout: layout}
	switch {
	case device == "cpu":
		return cpu.New(), nil
	case device == "cuda":
		return cuda.New(0, opts)
	case strings.HasPrefix(device, "cuda:"):
		n, err := strconv.Atoi(strings.TrimPrefix(device, "cuda:"))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("run.device = %q: the device ordinal must be a number, e.g. cuda:0", device)
		}
		return cuda.New(n, opts)
	}
	return nil, fmt.Errorf("run.device = %q: unknown device; use cpu, cuda or cuda:N", device)
}
