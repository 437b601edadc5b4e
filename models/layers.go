// Package models owns iterbin's networks: the layers (Dense, BatchNorm,
// ReLU, the log-softmax + NLL criterion), the binarizer of binarizable
// layers (sign forward, straight-through backward) and the architectures
// built from them. Layers are written against backend.Backend only.
//
// Conventions: each layer allocates its output and input-gradient buffers
// once, sized for the largest batch it will see; Forward overwrites its
// output, Backward overwrites its parameter gradients (one backward per
// optimizer step, so nothing accumulates).
package models

import (
	"fmt"
	"math"
	"math/rand/v2"

	"iterbin/backend"
)

// Param is a trained tensor with its gradient.
type Param struct {
	Name  string
	Shape []int
	Value backend.Tensor
	Grad  backend.Tensor
}

// Len is the number of elements.
func (p *Param) Len() int { return shapeLen(p.Shape) }

// Buffer is untrained state saved with the model (running statistics).
type Buffer struct {
	Name  string
	Len   int
	Value backend.Tensor
}

func shapeLen(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// Layer is one step of a sequential network.
type Layer interface {
	Name() string
	// OutFeatures is the number of values per sample the layer outputs.
	OutFeatures() int
	// Forward computes the output for the first n samples of x. The layer
	// keeps x for Backward.
	Forward(x backend.Tensor, n int, train bool) backend.Tensor
	// Backward takes the gradient with respect to the output, sets the
	// parameter gradients and, when needInputGrad, returns the gradient with
	// respect to the input (nil otherwise).
	Backward(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor
	Params() []*Param
	Buffers() []*Buffer
	// free releases the layer's tensors.
	free(be backend.Backend)
}

// STE selects the straight-through estimator of a binary layer.
type STE string

const (
	// STEIdentity passes the gradient taken with respect to sign(w) to the
	// latent w unchanged (the paper's code).
	STEIdentity STE = "identity"
	// STEClipped passes it only where |w| ≤ 1 (BinaryConnect/hardtanh).
	STEClipped STE = "clipped"
)

// Binarizer says how a binarizable layer behaves while binary.
type Binarizer struct {
	STE STE
	// ClipLatent clips the latent weights of binary layers to [−1, 1] after
	// every optimizer update.
	ClipLatent bool
}

// Binarizable is a layer whose weight can be binarized.
type Binarizable interface {
	Layer
	// SetBinary switches the forward pass between the latent weights and
	// their sign.
	SetBinary(binary bool)
	IsBinary() bool
	// Latent is the float weight the optimizer updates.
	Latent() *Param
	// MACs is the number of multiply-accumulates per sample.
	MACs() int
	binarizerSettings() (Binarizer, *Param, bool)
}

// Dense is a fully connected layer y = x·Wᵀ + b with W stored out×in
// (PyTorch's layout). Its weight is binarizable; the bias stays float.
type Dense struct {
	name      string
	in, out   int
	be        backend.Backend
	binarizer Binarizer
	binary    bool

	w, b  *Param
	wSign backend.Tensor // sign(w) while binary
	x     backend.Tensor // input saved by Forward
	y, dx backend.Tensor
}

// NewDense allocates a Dense layer initialized like PyTorch's nn.Linear:
// weights and bias uniform in ±1/√in.
func NewDense(be backend.Backend, name string, in, out, maxBatch int, bin Binarizer, rng *rand.Rand) *Dense {
	d := &Dense{name: name, in: in, out: out, be: be, binarizer: bin}
	d.w = &Param{Name: name + ".weight", Shape: []int{out, in}, Value: be.Alloc(in * out), Grad: be.Alloc(in * out)}
	d.b = &Param{Name: name + ".bias", Shape: []int{out}, Value: be.Alloc(out), Grad: be.Alloc(out)}
	d.wSign = be.Alloc(in * out)
	d.y = be.Alloc(maxBatch * out)
	d.dx = be.Alloc(maxBatch * in)
	bound := 1 / math.Sqrt(float64(in))
	be.Upload(d.w.Value, uniform(rng, in*out, bound))
	be.Upload(d.b.Value, uniform(rng, out, bound))
	return d
}

func uniform(rng *rand.Rand, n int, bound float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32((2*rng.Float64() - 1) * bound)
	}
	return v
}

func (d *Dense) Name() string          { return d.name }
func (d *Dense) OutFeatures() int      { return d.out }
func (d *Dense) Params() []*Param      { return []*Param{d.w, d.b} }
func (d *Dense) Buffers() []*Buffer    { return nil }
func (d *Dense) SetBinary(binary bool) { d.binary = binary }
func (d *Dense) IsBinary() bool        { return d.binary }
func (d *Dense) Latent() *Param        { return d.w }
func (d *Dense) MACs() int             { return d.in * d.out }
func (d *Dense) binarizerSettings() (Binarizer, *Param, bool) {
	return d.binarizer, d.w, d.binary
}

// weights returns the tensor the forward pass multiplies by.
func (d *Dense) weights() backend.Tensor {
	if d.binary {
		return d.wSign
	}
	return d.w.Value
}

// Forward computes y = x·Wᵀ + b, with W replaced by sign(W) while binary.
func (d *Dense) Forward(x backend.Tensor, n int, train bool) backend.Tensor {
	if d.binary {
		d.be.Sign(d.wSign, d.w.Value, d.in*d.out)
	}
	d.x = x
	d.be.Gemm(false, true, n, d.out, d.in, 1, x, d.weights(), 0, d.y)
	d.be.AddBias(d.y, d.b.Value, n, d.out, 1)
	return d.y
}

// Backward sets dW = dyᵀ·x (taken with respect to the weights the forward
// pass used, then passed to the latent weights by the STE), db = Σ dy, and
// dx = dy·W.
func (d *Dense) Backward(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	d.be.Gemm(true, false, d.out, d.in, n, 1, dy, d.x, 0, d.w.Grad)
	if d.binary && d.binarizer.STE == STEClipped {
		d.be.STEClippedMask(d.w.Grad, d.w.Value, d.in*d.out)
	}
	d.be.BiasGrad(d.b.Grad, dy, n, d.out, 1)
	if !needInputGrad {
		return nil
	}
	d.be.Gemm(false, false, n, d.in, d.out, 1, dy, d.weights(), 0, d.dx)
	return d.dx
}

func (d *Dense) free(be backend.Backend) {
	for _, t := range []backend.Tensor{d.w.Value, d.w.Grad, d.b.Value, d.b.Grad, d.wSign, d.y, d.dx} {
		be.Free(t)
	}
}

// BatchNorm normalizes each channel (feature) over the batch, PyTorch's
// BatchNorm1d/2d: momentum 0.1 and eps 1e-5 by default, running statistics
// used in evaluation.
type BatchNorm struct {
	name          string
	shape         backend.BNShape // N is the largest batch
	be            backend.Backend
	Momentum, Eps float32

	gamma, beta     *Param
	runMean, runVar *Buffer
	xhat, mean, inv backend.Tensor
	y, dx           backend.Tensor
	// x is the input of the last fused forward (forwardReLU,
	// forwardAddReLU), whose backward recomputes xhat from it instead of
	// keeping xhat.
	x backend.Tensor
}

// NewBatchNorm allocates a batch norm over channels×spatial values per
// sample (spatial = 1 for a feature vector).
func NewBatchNorm(be backend.Backend, name string, channels, spatial, maxBatch int) *BatchNorm {
	l := &BatchNorm{name: name, shape: backend.BNShape{N: maxBatch, C: channels, Spatial: spatial}, be: be, Momentum: 0.1, Eps: 1e-5}
	per := channels * spatial
	l.gamma = &Param{Name: name + ".weight", Shape: []int{channels}, Value: be.Alloc(channels), Grad: be.Alloc(channels)}
	l.beta = &Param{Name: name + ".bias", Shape: []int{channels}, Value: be.Alloc(channels), Grad: be.Alloc(channels)}
	be.Fill(l.gamma.Value, 1, channels)
	l.runMean = &Buffer{Name: name + ".running_mean", Len: channels, Value: be.Alloc(channels)}
	l.runVar = &Buffer{Name: name + ".running_var", Len: channels, Value: be.Alloc(channels)}
	be.Fill(l.runVar.Value, 1, channels)
	l.xhat = be.Alloc(maxBatch * per)
	l.mean, l.inv = be.Alloc(channels), be.Alloc(channels)
	l.y, l.dx = be.Alloc(maxBatch*per), be.Alloc(maxBatch*per)
	return l
}

func (l *BatchNorm) Name() string       { return l.name }
func (l *BatchNorm) OutFeatures() int   { return l.shape.C * l.shape.Spatial }
func (l *BatchNorm) Params() []*Param   { return []*Param{l.gamma, l.beta} }
func (l *BatchNorm) Buffers() []*Buffer { return []*Buffer{l.runMean, l.runVar} }

func (l *BatchNorm) batchShape(n int) backend.BNShape {
	s := l.shape
	s.N = n
	return s
}

// Forward normalizes with batch statistics in training, running ones in
// evaluation.
func (l *BatchNorm) Forward(x backend.Tensor, n int, train bool) backend.Tensor {
	s := l.batchShape(n)
	if train {
		l.be.BatchNormTrain(l.y, l.xhat, l.mean, l.inv, l.runMean.Value, l.runVar.Value, x, l.gamma.Value, l.beta.Value, s, l.Momentum, l.Eps)
	} else {
		l.be.BatchNormEval(l.y, x, l.gamma.Value, l.beta.Value, l.runMean.Value, l.runVar.Value, s, l.Eps)
	}
	return l.y
}

// forwardReLU is Forward in training followed by r's Forward, fused: the
// result goes to r's output.
func (l *BatchNorm) forwardReLU(f backend.Fused, x backend.Tensor, n int, r *ReLU) backend.Tensor {
	f.BatchNormReLUTrain(r.y, l.mean, l.inv, l.runMean.Value, l.runVar.Value, x, l.gamma.Value, l.beta.Value, l.batchShape(n), l.Momentum, l.Eps)
	l.x = x
	return r.y
}

// backwardReLU is r's Backward followed by Backward, fused, after
// forwardReLU.
func (l *BatchNorm) backwardReLU(f backend.Fused, dy backend.Tensor, n int, r *ReLU, needInputGrad bool) backend.Tensor {
	f.BatchNormReLUBackward(l.dx, l.gamma.Grad, l.beta.Grad, dy, l.x, l.mean, l.inv, l.gamma.Value, l.beta.Value, l.batchShape(n))
	if !needInputGrad {
		return nil
	}
	return l.dx
}

// forwardAddReLU is Forward in training of x, then skip added, then ReLU,
// fused into y: a residual block's end.
func (l *BatchNorm) forwardAddReLU(f backend.FusedResidual, x, skip, y backend.Tensor, n int) backend.Tensor {
	f.BatchNormAddReLUTrain(y, l.mean, l.inv, l.runMean.Value, l.runVar.Value, x, skip, l.gamma.Value, l.beta.Value, l.batchShape(n), l.Momentum, l.Eps)
	l.x = x
	return y
}

// backwardAddReLU is the backward of forwardAddReLU, whose output was y:
// the gradient of the sum goes to dSum, and that of x is returned.
func (l *BatchNorm) backwardAddReLU(f backend.FusedResidual, dy, y, dSum backend.Tensor, n int) backend.Tensor {
	f.BatchNormAddReLUBackward(l.dx, l.gamma.Grad, l.beta.Grad, dSum, dy, y, l.x, l.mean, l.inv, l.gamma.Value, l.batchShape(n))
	return l.dx
}

// Backward needs a preceding training-mode Forward.
func (l *BatchNorm) Backward(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	l.be.BatchNormBackward(l.dx, l.gamma.Grad, l.beta.Grad, dy, l.xhat, l.inv, l.gamma.Value, l.batchShape(n))
	if !needInputGrad {
		return nil
	}
	return l.dx
}

func (l *BatchNorm) free(be backend.Backend) {
	for _, t := range []backend.Tensor{l.gamma.Value, l.gamma.Grad, l.beta.Value, l.beta.Grad, l.runMean.Value, l.runVar.Value, l.xhat, l.mean, l.inv, l.y, l.dx} {
		be.Free(t)
	}
}

// ReLU is max(x, 0).
type ReLU struct {
	name     string
	features int
	be       backend.Backend
	y, dx    backend.Tensor
}

// NewReLU allocates a ReLU over features values per sample.
func NewReLU(be backend.Backend, name string, features, maxBatch int) *ReLU {
	return &ReLU{name: name, features: features, be: be, y: be.Alloc(maxBatch * features), dx: be.Alloc(maxBatch * features)}
}

func (l *ReLU) Name() string       { return l.name }
func (l *ReLU) OutFeatures() int   { return l.features }
func (l *ReLU) Params() []*Param   { return nil }
func (l *ReLU) Buffers() []*Buffer { return nil }

func (l *ReLU) Forward(x backend.Tensor, n int, train bool) backend.Tensor {
	l.be.ReLUForward(l.y, x, n*l.features)
	return l.y
}

func (l *ReLU) Backward(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	if !needInputGrad {
		return nil
	}
	l.be.ReLUBackward(l.dx, dy, l.y, n*l.features)
	return l.dx
}

func (l *ReLU) free(be backend.Backend) { be.Free(l.y); be.Free(l.dx) }

// CrossEntropy is log-softmax followed by the negative log-likelihood,
// averaged over the batch.
type CrossEntropy struct {
	classes int
	be      backend.Backend
	logp    backend.Tensor
	dx      backend.Tensor
}

// NewCrossEntropy allocates the criterion for the given number of classes.
func NewCrossEntropy(be backend.Backend, classes, maxBatch int) *CrossEntropy {
	return &CrossEntropy{classes: classes, be: be, logp: be.Alloc(maxBatch * classes), dx: be.Alloc(maxBatch * classes)}
}

// Forward computes log-probabilities and accumulates the summed loss and the
// count of correct predictions into sums (two elements).
func (c *CrossEntropy) Forward(sums, logits, labels backend.Tensor, n int) backend.Tensor {
	c.be.LogSoftmax(c.logp, logits, n, c.classes)
	c.be.NLLLoss(sums, c.logp, labels, n, c.classes)
	return c.logp
}

// Backward returns the gradient of the mean loss with respect to the logits.
func (c *CrossEntropy) Backward(labels backend.Tensor, n int) backend.Tensor {
	c.be.LogSoftmaxNLLBackward(c.dx, c.logp, labels, n, c.classes, 1/float32(n))
	return c.dx
}

func (c *CrossEntropy) free(be backend.Backend) { be.Free(c.logp); be.Free(c.dx) }

// checkBinarizer validates a binarizer's settings.
func checkBinarizer(b Binarizer) error {
	switch b.STE {
	case STEIdentity, STEClipped:
		return nil
	}
	return fmt.Errorf("models: unknown straight-through estimator %q (use %q or %q)", b.STE, STEIdentity, STEClipped)
}

// forwardLayers runs layers in order on the first n samples of x. In
// training, a BatchNorm followed by a ReLU runs as one fused op when the
// backend has it (backend.Fused); the ReLU's output buffer then holds the
// result, as if both had run.
func forwardLayers(be backend.Backend, layers []Layer, x backend.Tensor, n int, train bool) backend.Tensor {
	f, _ := be.(backend.Fused)
	h := x
	for i := 0; i < len(layers); i++ {
		if bn, r := bnReLU(layers, i); train && f != nil && bn != nil {
			h = bn.forwardReLU(f, h, n, r)
			i++
			continue
		}
		h = layers[i].Forward(h, n, train)
	}
	return h
}

// backwardLayers runs the layers' Backward in reverse order from the
// gradient g of the last one's output, fusing what forwardLayers fused,
// and returns the gradient of the first one's input (nil unless
// firstInputGrad: the model's first layer needs none).
func backwardLayers(be backend.Backend, layers []Layer, g backend.Tensor, n int, firstInputGrad bool) backend.Tensor {
	f, _ := be.(backend.Fused)
	for i := len(layers) - 1; i >= 0; i-- {
		if i > 0 && f != nil {
			if bn, r := bnReLU(layers, i-1); bn != nil {
				g = bn.backwardReLU(f, g, n, r, i-1 > 0 || firstInputGrad)
				i--
				continue
			}
		}
		g = layers[i].Backward(g, n, i > 0 || firstInputGrad)
	}
	return g
}

// bnReLU returns layers i and i+1 when they are a BatchNorm and a ReLU.
func bnReLU(layers []Layer, i int) (*BatchNorm, *ReLU) {
	if i+1 >= len(layers) {
		return nil, nil
	}
	bn, ok := layers[i].(*BatchNorm)
	r, ok2 := layers[i+1].(*ReLU)
	if !ok || !ok2 {
		return nil, nil
	}
	return bn, r
}
