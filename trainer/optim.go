package trainer

import (
	"iterbin/backend"
	"iterbin/models"
)

// Optimizer updates every parameter of a model from its gradient. One
// optimizer serves the whole run: its state is never reset when a layer
// becomes binary. On a backend that scales the loss (backend.LossScaler:
// CUDA at precision fp16) it drives the scaler: every gradient is checked
// before the step's updates, which the backend skips when one is not
// finite, and the scale is adjusted after them. A skipped step counts in
// Steps; the backend leaves it out of Adam's bias correction, as
// PyTorch's GradScaler does by not calling optimizer.step().
type Optimizer struct {
	be     backend.Backend
	scaler backend.LossScaler // nil where the loss is not scaled
	kind   string             // adam or sgd
	params []*models.Param
	// state holds, per parameter, Adam's two moments or SGD's momentum.
	state [][]backend.Tensor
	// Steps is the number of updates made so far.
	Steps int
	cfg   TrainConfig
}

// NewOptimizer allocates zeroed state for each parameter and, on a
// backend that scales the loss, sets the scaler to its initial state: each
// run (a sensitivity run, the main run) starts from the same scale.
func NewOptimizer(be backend.Backend, params []*models.Param, cfg TrainConfig) *Optimizer {
	o := &Optimizer{be: be, kind: cfg.Optimizer, params: params, cfg: cfg}
	if ls, ok := be.(backend.LossScaler); ok && ls.ScalesLoss() {
		o.scaler = ls
		be.Upload(ls.LossScaleState(), backend.InitialLossScaleState())
	}
	per := 1
	if o.kind == "adam" {
		per = 2
	}
	for _, p := range params {
		var st []backend.Tensor
		for i := 0; i < per; i++ {
			st = append(st, be.Alloc(p.Len()))
		}
		o.state = append(o.state, st)
	}
	return o
}

// Step applies one update with learning rate lr.
func (o *Optimizer) Step(lr float64) {
	o.Steps++
	c := o.cfg
	if o.scaler != nil {
		for _, p := range o.params {
			o.scaler.CheckGradient(p.Grad, p.Len())
		}
	}
	for i, p := range o.params {
		st := o.state[i]
		switch o.kind {
		case "adam":
			o.be.AdamStep(p.Value, p.Grad, st[0], st[1], p.Len(), backend.AdamParams{
				LR: float32(lr), Beta1: float32(c.Betas[0]), Beta2: float32(c.Betas[1]), Eps: float32(c.Eps),
				WeightDecay: float32(c.WeightDecay), Step: o.Steps})
		case "sgd":
			o.be.SGDStep(p.Value, p.Grad, st[0], p.Len(), backend.SGDParams{
				LR: float32(lr), Momentum: float32(c.Momentum), WeightDecay: float32(c.WeightDecay), Nesterov: c.Nesterov})
		}
	}
	if o.scaler != nil {
		o.scaler.EndStep()
	}
}

// LossScaleName is the loss scaler's state in checkpoints.
const LossScaleName = "loss_scale"

// StateTensors names the optimizer's state tensors, for checkpoints: the
// moments or momentum of each parameter, and the loss scaler's state
// where there is one (optional: a checkpoint without it leaves the state
// as it is, and one with it is read where there is none).
func (o *Optimizer) StateTensors() []NamedTensor {
	suffix := []string{"sgd_momentum"}
	if o.kind == "adam" {
		suffix = []string{"adam_m", "adam_v"}
	}
	var out []NamedTensor
	for i, p := range o.params {
		for j, t := range o.state[i] {
			out = append(out, NamedTensor{Name: p.Name + "." + suffix[j], Len: p.Len(), T: t})
		}
	}
	if o.scaler != nil {
		out = append(out, NamedTensor{Name: LossScaleName, Len: backend.LossScaleStateLen, T: o.scaler.LossScaleState(), Optional: true})
	}
	return out
}

// Free releases the optimizer state.
func (o *Optimizer) Free() {
	for _, st := range o.state {
		for _, t := range st {
			o.be.Free(t)
		}
	}
}

// NamedTensor is a tensor with the name it has in a checkpoint.
type NamedTensor struct {
	Name string
	Len  int
	T    backend.Tensor
	// Optional says a checkpoint may lack it (reading one leaves T as it
	// is) and a reader that has no such tensor skips it.
	Optional bool
}

// LossScale returns the loss scaler's state (indexed by backend.LossScale
// and the other constants) and true, or false where the loss is not
// scaled. It waits for the device.
func (o *Optimizer) LossScale() ([]float32, bool) {
	if o.scaler == nil {
		return nil, false
	}
	state := make([]float32, backend.LossScaleStateLen)
	o.be.Download(state, o.scaler.LossScaleState())
	return state, true
}
