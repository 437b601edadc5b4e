package trainer

import (
	"fmt"
	"slices"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
	"iterbin/models"
)

// scalingRecorder is a CPU backend posing as one that scales the loss: it
// records the calls the optimizer makes, in order, and keeps a state
// tensor for the scaler.
type scalingRecorder struct {
	backend.Backend
	state backend.Tensor
	calls []string
}

func (r *scalingRecorder) ScalesLoss() bool { return true }
func (r *scalingRecorder) CheckGradient(g backend.Tensor, n int) {
	r.calls = append(r.calls, fmt.Sprintf("check %d", n))
}
func (r *scalingRecorder) EndStep()                       { r.calls = append(r.calls, "end") }
func (r *scalingRecorder) LossScaleState() backend.Tensor { return r.state }
func (r *scalingRecorder) AdamStep(w, g, m, v backend.Tensor, n int, p backend.AdamParams) {
	r.calls = append(r.calls, fmt.Sprintf("adam %d", n))
	r.Backend.AdamStep(w, g, m, v, n, p)
}

// The optimizer drives a loss scaler: it sets the initial state when it
// is made, checks every gradient before a step's first update, ends the
// step after its last, and checkpoints the state as an optional tensor;
// on a backend that does not scale, none of it.
func TestOptimizerDrivesTheLossScaler(t *testing.T) {
	cpuBackend := cpu.New()
	defer cpuBackend.Close()
	r := &scalingRecorder{Backend: cpuBackend, state: cpuBackend.Alloc(backend.LossScaleStateLen)}
	cpuBackend.Upload(r.state, []float32{3, 1, 4, 1})
	var params []*models.Param
	for i, n := range []int{3, 5} {
		p := &models.Param{Name: fmt.Sprintf("p%d", i), Shape: []int{n}, Value: r.Alloc(n), Grad: r.Alloc(n)}
		params = append(params, p)
	}
	opt := NewOptimizer(r, params, Default().Train)
	defer opt.Free()
	st, ok := opt.LossScale()
	if !ok || !slices.Equal(st, backend.InitialLossScaleState()) {
		t.Fatalf("state after NewOptimizer %v (%v), want %v", st, ok, backend.InitialLossScaleState())
	}
	opt.Step(0.1)
	opt.Step(0.1)
	step := []string{"check 3", "check 5", "adam 3", "adam 5", "end"}
	if want := append(slices.Clone(step), step...); !slices.Equal(r.calls, want) {
		t.Errorf("calls %v, want %v", r.calls, want)
	}
	named := opt.StateTensors()
	last := named[len(named)-1]
	if last.Name != LossScaleName || last.Len != backend.LossScaleStateLen || last.T != r.state || !last.Optional {
		t.Errorf("the last state tensor is %+v, want the scaler's, optional", last)
	}

	plain := NewOptimizer(cpuBackend, params, Default().Train)
	defer plain.Free()
	if _, ok := plain.LossScale(); ok {
		t.Error("an optimizer on the CPU backend reports a loss scale")
	}
	for _, nt := range plain.StateTensors() {
		if nt.Name == LossScaleName {
			t.Error("an optimizer on the CPU backend checkpoints a loss scale")
		}
	}
}
