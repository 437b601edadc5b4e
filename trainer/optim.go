package trainer

import (
	"iterbin/backend"
	"iterbin/models"
)

// Optimizer updates every parameter of a model from its gradient. One
// optimizer serves the whole run: its state is never reset when a layer
// becomes binary.
type Optimizer struct {
	be     backend.Backend
	kind   string // adam or sgd
	params []*models.Param
	// state holds, per parameter, Adam's two moments or SGD's momentum.
	state [][]backend.Tensor
	// Steps is the number of updates made so far.
	Steps int
	cfg   TrainConfig
}

// NewOptimizer allocates zeroed state for each parameter.
func NewOptimizer(be backend.Backend, params []*models.Param, cfg TrainConfig) *Optimizer {
	o := &Optimizer{be: be, kind: cfg.Optimizer, params: params, cfg: cfg}
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
}

// StateTensors names the optimizer's state tensors, for checkpoints.
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
}
