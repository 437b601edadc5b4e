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
// "cuda:N"). CUDA needs a build with -tags cuda; the default build says so.
func OpenBackend(device string) (backend.Backend, error) {
	return openBackend(device, cuda.Options{})
}

// OpenRunBackend opens the backend a configuration asks for.
func OpenRunBackend(cfg *Config) (backend.Backend, error) {
	return openBackend(cfg.Run.Device, cuda.Options{TF32: cfg.Run.TF32})
}

func openBackend(device string, opts cuda.Options) (backend.Backend, error) {
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
