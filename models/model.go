package models

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"iterbin/backend"
)

// Model is a sequential network ending in the cross-entropy criterion.
type Model struct {
	Arch     string
	Input    int // values per sample
	Classes  int
	MaxBatch int

	be          backend.Backend
	layers      []Layer
	binarizable []Binarizable // cached by finish
	loss        *CrossEntropy
}

// Layers returns the layers in forward order.
func (m *Model) Layers() []Layer { return m.layers }

// Composite is a layer made of sublayers (a residual block).
type Composite interface {
	Sublayers() []Layer
}

// Binarizable returns the binarizable layers in forward order, those
// inside composite layers included.
func (m *Model) Binarizable() []Binarizable { return m.binarizable }

func findBinarizable(layers []Layer) []Binarizable {
	var out []Binarizable
	var walk func([]Layer)
	walk = func(ls []Layer) {
		for _, l := range ls {
			if b, ok := l.(Binarizable); ok {
				out = append(out, b)
			}
			if c, ok := l.(Composite); ok {
				walk(c.Sublayers())
			}
		}
	}
	walk(layers)
	return out
}

// Params returns every trained tensor in a fixed order.
func (m *Model) Params() []*Param {
	var out []*Param
	for _, l := range m.layers {
		out = append(out, l.Params()...)
	}
	return out
}

// Buffers returns every untrained state tensor in a fixed order.
func (m *Model) Buffers() []*Buffer {
	var out []*Buffer
	for _, l := range m.layers {
		out = append(out, l.Buffers()...)
	}
	return out
}

// SetBinary makes exactly the named binarizable layers binary.
func (m *Model) SetBinary(binary map[string]bool) error {
	known := map[string]bool{}
	for _, l := range m.Binarizable() {
		known[l.Name()] = true
		l.SetBinary(binary[l.Name()])
	}
	for name, on := range binary {
		if on && !known[name] {
			return fmt.Errorf("models: %s has no binarizable layer %q", m.Arch, name)
		}
	}
	return nil
}

// Forward runs the network on the first n samples of x and accumulates the
// summed loss and correct count into sums. It returns the log-probabilities.
func (m *Model) Forward(sums, x, labels backend.Tensor, n int, train bool) backend.Tensor {
	h := forwardLayers(m.be, m.layers, x, n, train)
	return m.loss.Forward(sums, h, labels, n)
}

// Backward sets every parameter gradient of the mean loss of the last
// training-mode Forward.
func (m *Model) Backward(labels backend.Tensor, n int) {
	g := m.loss.Backward(labels, n)
	backwardLayers(m.be, m.layers, g, n, false)
}

// ClipLatent clips the latent weights of binary layers whose binarizer asks
// for it; call it after each optimizer update.
func (m *Model) ClipLatent() {
	for _, l := range m.Binarizable() {
		if bin, w, binary := l.binarizerSettings(); binary && bin.ClipLatent {
			m.be.Clip(w.Value, -1, 1, w.Len())
		}
	}
}

// ResetLatentToSign sets the latent weights of binary layers to sign(w), as
// the paper's MNIST code does after every epoch.
func (m *Model) ResetLatentToSign() {
	for _, l := range m.Binarizable() {
		if l.IsBinary() {
			p := l.Latent()
			m.be.Sign(p.Value, p.Value, p.Len())
		}
	}
}

// Free releases every tensor of the model.
func (m *Model) Free() {
	for _, l := range m.layers {
		l.free(m.be)
	}
	m.loss.free(m.be)
}

// MLPSpec describes the paper's MLPs: each hidden Dense is followed by
// batch norm and ReLU; the last Dense is followed by batch norm.
type MLPSpec struct {
	Input   int
	Hidden  []int
	Classes int
}

// NewMLP builds an MLP with layers fc1…fcK, bn1…bnK, relu1…relu(K−1).
func NewMLP(be backend.Backend, spec MLPSpec, maxBatch int, bin Binarizer, rng *rand.Rand) (*Model, error) {
	if err := checkBinarizer(bin); err != nil {
		return nil, err
	}
	if spec.Input < 1 || spec.Classes < 2 {
		return nil, fmt.Errorf("models: MLP needs input ≥ 1 and classes ≥ 2, got %d and %d", spec.Input, spec.Classes)
	}
	if maxBatch < 1 {
		return nil, errors.New("models: batch size must be at least 1")
	}
	m := &Model{Arch: spec.String(), Input: spec.Input, Classes: spec.Classes, MaxBatch: maxBatch, be: be}
	widths := append(append([]int{spec.Input}, spec.Hidden...), spec.Classes)
	for i := 1; i < len(widths); i++ {
		if widths[i] < 1 {
			return nil, fmt.Errorf("models: MLP hidden width %d must be at least 1", widths[i])
		}
		k := fmt.Sprint(i)
		m.layers = append(m.layers,
			NewDense(be, "fc"+k, widths[i-1], widths[i], maxBatch, bin, rng),
			NewBatchNorm(be, "bn"+k, widths[i], 1, maxBatch))
		if i < len(widths)-1 {
			m.layers = append(m.layers, NewReLU(be, "relu"+k, widths[i], maxBatch))
		}
	}
	return m.finish()
}

// String names the MLP by its widths, e.g. "mlp-784-300-100-10".
func (s MLPSpec) String() string {
	out := fmt.Sprintf("mlp-%d", s.Input)
	for _, h := range s.Hidden {
		out += fmt.Sprintf("-%d", h)
	}
	return out + fmt.Sprintf("-%d", s.Classes)
}
