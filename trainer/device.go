package trainer

import (
	"fmt"
	"strings"

	"iterbin/backend"
	"iterbin/backend/cpu"
)

// OpenBackend returns the backend for a run.device value ("cpu", "cuda",
// "cuda:N").
func OpenBackend(device string) (backend.Backend, error) {
	switch {
	case device == "cpu":
		return cpu.New(), nil
	case device == "cuda" || strings.HasPrefix(device, "cuda:"):
		return nil, fmt.Errorf("run.device = %q: this iterbin build has no CUDA backend (it is the pure-Go CPU build); set run.device = \"cpu\" or -set run.device=cpu", device)
	}
	return nil, fmt.Errorf("run.device = %q: unknown device; use cpu, cuda or cuda:N", device)
}
