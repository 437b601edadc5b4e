//go:build !cuda

package cuda

import (
	"fmt"

	"iterbin/backend"
)

// New returns the CUDA backend for device ordinal; this build has none.
// An unknown opts.Precision or opts.Layout is reported first, as the CUDA
// build does.
func New(ordinal int, opts Options) (backend.Backend, error) {
	if _, err := opts.precision(); err != nil {
		return nil, err
	}
	if _, err := opts.layout(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("device cuda:%d: this iterbin was built without CUDA support; rebuild it with `make build-cuda` (go build -tags cuda ./cmd/iterbin, needs the CUDA toolkit headers and libcuda), or set run.device = \"cpu\"", ordinal)
}

// Built says whether this build has the CUDA backend.
const Built = false
