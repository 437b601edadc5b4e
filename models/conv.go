package models

import (
	"math"
	"math/rand/v2"

	"iterbin/backend"
)

// Shape is the per-sample shape of an image tensor (NCHW without N).
type Shape struct{ C, H, W int }

// Size is the number of values per sample.
func (s Shape) Size() int { return s.C * s.H * s.W }

// Init selects how a layer's weights are drawn.
type Init int

const (
	// InitPyTorchDefault is nn.Linear/nn.Conv2d's default: weights and bias
	// uniform in ±1/√fan_in.
	InitPyTorchDefault Init = iota
	// InitKaimingNormal draws weights from N(0, 2/fan_in) (the CIFAR
	// ResNet's init); the bias keeps the default.
	InitKaimingNormal
	// InitKaimingNormalFanOut draws conv weights from N(0, 2/fan_out),
	// fan_out = out_channels·k·k (torchvision's ResNets).
	InitKaimingNormalFanOut
)

func initWeights(rng *rand.Rand, n, fanIn, fanOut int, init Init) []float32 {
	if init == InitKaimingNormal || init == InitKaimingNormalFanOut {
		fan := fanIn
		if init == InitKaimingNormalFanOut {
			fan = fanOut
		}
		std := math.Sqrt(2 / float64(fan))
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * std)
		}
		return v
	}
	return uniform(rng, n, 1/math.Sqrt(float64(fanIn)))
}

// Conv2D is a 2-d convolution over NCHW inputs with OC×C×KH×KW weights
// (PyTorch's layout) and an optional bias. Its weight is binarizable.
type Conv2D struct {
	name      string
	shape     backend.ConvShape // N is the largest batch
	be        backend.Backend
	binarizer Binarizer
	binary    bool

	w, b  *Param // b is nil without bias
	wSign backend.Tensor
	x     backend.Tensor
	y, dx backend.Tensor
}

// NewConv2D allocates a square-kernel convolution of the input shape.
func NewConv2D(be backend.Backend, name string, in Shape, outChannels, kernel, stride, pad int, bias bool, maxBatch int, bin Binarizer, init Init, rng *rand.Rand) *Conv2D {
	s := backend.ConvShape{N: maxBatch, C: in.C, H: in.H, W: in.W, OC: outChannels, KH: kernel, KW: kernel, Stride: stride, Pad: pad}
	l := &Conv2D{name: name, shape: s, be: be, binarizer: bin}
	nw := outChannels * in.C * kernel * kernel
	fanIn := in.C * kernel * kernel
	l.w = &Param{Name: name + ".weight", Shape: []int{outChannels, in.C, kernel, kernel}, Value: be.Alloc(nw), Grad: be.Alloc(nw)}
	be.Upload(l.w.Value, initWeights(rng, nw, fanIn, outChannels*kernel*kernel, init))
	if bias {
		l.b = &Param{Name: name + ".bias", Shape: []int{outChannels}, Value: be.Alloc(outChannels), Grad: be.Alloc(outChannels)}
		be.Upload(l.b.Value, uniform(rng, outChannels, 1/math.Sqrt(float64(fanIn))))
	}
	l.wSign = be.Alloc(nw)
	l.y = be.Alloc(maxBatch * l.OutShape().Size())
	l.dx = be.Alloc(maxBatch * in.Size())
	return l
}

// OutShape is the per-sample output shape.
func (l *Conv2D) OutShape() Shape {
	return Shape{C: l.shape.OC, H: l.shape.OutH(), W: l.shape.OutW()}
}

func (l *Conv2D) Name() string          { return l.name }
func (l *Conv2D) OutFeatures() int      { return l.OutShape().Size() }
func (l *Conv2D) Buffers() []*Buffer    { return nil }
func (l *Conv2D) SetBinary(binary bool) { l.binary = binary }
func (l *Conv2D) IsBinary() bool        { return l.binary }
func (l *Conv2D) Latent() *Param        { return l.w }
func (l *Conv2D) MACs() int             { return l.w.Len() * l.shape.OutH() * l.shape.OutW() }
func (l *Conv2D) binarizerSettings() (Binarizer, *Param, bool) {
	return l.binarizer, l.w, l.binary
}

func (l *Conv2D) Params() []*Param {
	if l.b == nil {
		return []*Param{l.w}
	}
	return []*Param{l.w, l.b}
}

func (l *Conv2D) weights() backend.Tensor {
	if l.binary {
		return l.wSign
	}
	return l.w.Value
}

func (l *Conv2D) batchShape(n int) backend.ConvShape {
	s := l.shape
	s.N = n
	return s
}

// Forward convolves with W, or sign(W) while binary, and adds the bias.
func (l *Conv2D) Forward(x backend.Tensor, n int, train bool) backend.Tensor {
	if l.binary {
		l.be.Sign(l.wSign, l.w.Value, l.w.Len())
	}
	l.x = x
	l.be.Conv2DForward(l.y, x, l.weights(), l.batchShape(n))
	if l.b != nil {
		l.be.AddBias(l.y, l.b.Value, n, l.shape.OC, l.shape.OutH()*l.shape.OutW())
	}
	return l.y
}

// Backward sets the weight gradient (taken with respect to the weights the
// forward pass used, then passed through the STE), the bias gradient and dx.
func (l *Conv2D) Backward(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	l.paramGrads(dy, n)
	if !needInputGrad {
		return nil
	}
	l.be.Conv2DBackwardData(l.dx, dy, l.weights(), l.batchShape(n))
	return l.dx
}

// backwardAdd is Backward with the input gradient added to dx instead of
// written to the layer's own buffer.
func (l *Conv2D) backwardAdd(f backend.FusedResidual, dy backend.Tensor, n int, dx backend.Tensor) {
	l.paramGrads(dy, n)
	f.Conv2DBackwardDataAdd(dx, dy, l.weights(), l.batchShape(n))
}

// paramGrads sets the gradients of the weights (through the binarizer's
// straight-through estimator) and bias.
func (l *Conv2D) paramGrads(dy backend.Tensor, n int) {
	s := l.batchShape(n)
	l.be.Conv2DBackwardFilter(l.w.Grad, dy, l.x, s)
	if l.binary && l.binarizer.STE == STEClipped {
		l.be.STEClippedMask(l.w.Grad, l.w.Value, l.w.Len())
	}
	if l.b != nil {
		l.be.BiasGrad(l.b.Grad, dy, n, s.OC, s.OutH()*s.OutW())
	}
}

func (l *Conv2D) free(be backend.Backend) {
	for _, p := range l.Params() {
		be.Free(p.Value)
		be.Free(p.Grad)
	}
	for _, t := range []backend.Tensor{l.wSign, l.y, l.dx} {
		be.Free(t)
	}
}

// MaxPool2D takes the maximum over square windows.
type MaxPool2D struct {
	name          string
	shape         backend.PoolShape
	be            backend.Backend
	y, argmax, dx backend.Tensor
}

// NewMaxPool2D allocates a max pooling of the input shape (padding is
// ignored by the maximum, as PyTorch's −∞ padding).
func NewMaxPool2D(be backend.Backend, name string, in Shape, kernel, stride, pad, maxBatch int) *MaxPool2D {
	l := &MaxPool2D{name: name, be: be, shape: backend.PoolShape{N: maxBatch, C: in.C, H: in.H, W: in.W, Kernel: kernel, Stride: stride, Pad: pad}}
	out := l.OutShape().Size()
	l.y, l.argmax, l.dx = be.Alloc(maxBatch*out), be.Alloc(maxBatch*out), be.Alloc(maxBatch*in.Size())
	return l
}

// OutShape is the per-sample output shape.
func (l *MaxPool2D) OutShape() Shape {
	return Shape{C: l.shape.C, H: l.shape.OutH(), W: l.shape.OutW()}
}

func (l *MaxPool2D) Name() string       { return l.name }
func (l *MaxPool2D) OutFeatures() int   { return l.OutShape().Size() }
func (l *MaxPool2D) Params() []*Param   { return nil }
func (l *MaxPool2D) Buffers() []*Buffer { return nil }

func (l *MaxPool2D) batchShape(n int) backend.PoolShape {
	s := l.shape
	s.N = n
	return s
}

func (l *MaxPool2D) Forward(x backend.Tensor, n int, train bool) backend.Tensor {
	l.be.MaxPool2DForward(l.y, l.argmax, x, l.batchShape(n))
	return l.y
}

func (l *MaxPool2D) Backward(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	if !needInputGrad {
		return nil
	}
	l.be.MaxPool2DBackward(l.dx, dy, l.argmax, l.batchShape(n))
	return l.dx
}

func (l *MaxPool2D) free(be backend.Backend) { be.Free(l.y); be.Free(l.argmax); be.Free(l.dx) }

// GlobalAvgPool averages each channel over its positions: N×C×H×W → N×C.
type GlobalAvgPool struct {
	name  string
	in    Shape
	be    backend.Backend
	y, dx backend.Tensor
}

// NewGlobalAvgPool allocates a global average pooling of the input shape.
func NewGlobalAvgPool(be backend.Backend, name string, in Shape, maxBatch int) *GlobalAvgPool {
	return &GlobalAvgPool{name: name, in: in, be: be, y: be.Alloc(maxBatch * in.C), dx: be.Alloc(maxBatch * in.Size())}
}

func (l *GlobalAvgPool) Name() string       { return l.name }
func (l *GlobalAvgPool) OutFeatures() int   { return l.in.C }
func (l *GlobalAvgPool) Params() []*Param   { return nil }
func (l *GlobalAvgPool) Buffers() []*Buffer { return nil }

func (l *GlobalAvgPool) Forward(x backend.Tensor, n int, train bool) backend.Tensor {
	l.be.GlobalAvgPoolForward(l.y, x, n, l.in.C, l.in.H*l.in.W)
	return l.y
}

func (l *GlobalAvgPool) Backward(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	if !needInputGrad {
		return nil
	}
	l.be.GlobalAvgPoolBackward(l.dx, dy, n, l.in.C, l.in.H*l.in.W)
	return l.dx
}

func (l *GlobalAvgPool) free(be backend.Backend) { be.Free(l.y); be.Free(l.dx) }

// Flatten views N×C×H×W as N×(C·H·W); NCHW is already contiguous per
// sample, so it moves no data.
type Flatten struct {
	name     string
	features int
}

// NewFlatten returns a flatten of the input shape.
func NewFlatten(name string, in Shape) *Flatten { return &Flatten{name: name, features: in.Size()} }

func (l *Flatten) Name() string                                               { return l.name }
func (l *Flatten) OutFeatures() int                                           { return l.features }
func (l *Flatten) Params() []*Param                                           { return nil }
func (l *Flatten) Buffers() []*Buffer                                         { return nil }
func (l *Flatten) Forward(x backend.Tensor, n int, train bool) backend.Tensor { return x }
func (l *Flatten) Backward(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	if !needInputGrad {
		return nil
	}
	return dy
}
func (l *Flatten) free(backend.Backend) {}

// Shortcut selects a residual block's shortcut when its shape changes.
type Shortcut int

const (
	// ShortcutOptionA subsamples and zero-pads channels (no parameters),
	// the CIFAR ResNets' option A.
	ShortcutOptionA Shortcut = iota
	// ShortcutProjection is a strided 1×1 convolution and batch norm,
	// torchvision's downsample.
	ShortcutProjection
)

// ResidualBlock is a ResNet block: a main path of layers ending in batch
// norm, plus a shortcut (the identity, or option A or a projection when the
// shape changes), summed and passed through ReLU.
type ResidualBlock struct {
	name    string
	be      backend.Backend
	main    []Layer
	proj    []Layer                // projection shortcut: conv, batch norm
	optionA *backend.ShortcutShape // option-A shortcut
	in, out Shape

	sc, sum, y backend.Tensor
	dSum, dx   backend.Tensor
	dxShort    backend.Tensor
	// endFused says the last Forward ran the main path's final batch norm,
	// the sum and the ReLU as one op (backend.FusedResidual).
	endFused bool
}

// convBN appends conv–BN(–ReLU) to layers and returns the output shape.
func convBN(be backend.Backend, layers *[]Layer, name, suffix string, in Shape, out, k, stride, pad int, relu bool, maxBatch int, bin Binarizer, init Init, rng *rand.Rand) Shape {
	c := NewConv2D(be, name+".conv"+suffix, in, out, k, stride, pad, false, maxBatch, bin, init, rng)
	sh := c.OutShape()
	*layers = append(*layers, c, NewBatchNorm(be, name+".bn"+suffix, sh.C, sh.H*sh.W, maxBatch))
	if relu {
		*layers = append(*layers, NewReLU(be, name+".relu"+suffix, sh.Size(), maxBatch))
	}
	return sh
}

// NewBasicBlock builds conv3×3–BN–ReLU–conv3×3–BN from in to outChannels
// with the given stride; a change of shape uses the given shortcut.
func NewBasicBlock(be backend.Backend, name string, in Shape, outChannels, stride, maxBatch int, shortcut Shortcut, bin Binarizer, init Init, rng *rand.Rand) *ResidualBlock {
	b := &ResidualBlock{name: name, be: be, in: in}
	mid := convBN(be, &b.main, name, "1", in, outChannels, 3, stride, 1, true, maxBatch, bin, init, rng)
	b.out = convBN(be, &b.main, name, "2", mid, outChannels, 3, 1, 1, false, maxBatch, bin, init, rng)
	b.finish(shortcut, stride, maxBatch, bin, init, rng)
	return b
}

// NewBottleneck builds torchvision's bottleneck (v1.5, stride on the 3×3):
// conv1×1 to width, conv3×3, conv1×1 to 4·width, with batch norms.
func NewBottleneck(be backend.Backend, name string, in Shape, width, stride, maxBatch int, bin Binarizer, init Init, rng *rand.Rand) *ResidualBlock {
	b := &ResidualBlock{name: name, be: be, in: in}
	sh := convBN(be, &b.main, name, "1", in, width, 1, 1, 0, true, maxBatch, bin, init, rng)
	sh = convBN(be, &b.main, name, "2", sh, width, 3, stride, 1, true, maxBatch, bin, init, rng)
	b.out = convBN(be, &b.main, name, "3", sh, 4*width, 1, 1, 0, false, maxBatch, bin, init, rng)
	b.finish(ShortcutProjection, stride, maxBatch, bin, init, rng)
	return b
}

func (b *ResidualBlock) finish(shortcut Shortcut, stride, maxBatch int, bin Binarizer, init Init, rng *rand.Rand) {
	be := b.be
	if stride != 1 || b.out.C != b.in.C {
		if shortcut == ShortcutProjection {
			c := NewConv2D(be, b.name+".downsample.0", b.in, b.out.C, 1, stride, 0, false, maxBatch, bin, init, rng)
			sh := c.OutShape()
			b.proj = []Layer{c, NewBatchNorm(be, b.name+".downsample.1", sh.C, sh.H*sh.W, maxBatch)}
		} else {
			b.optionA = &backend.ShortcutShape{N: maxBatch, C: b.in.C, H: b.in.H, W: b.in.W, OC: b.out.C, Stride: stride}
			b.sc = be.Alloc(maxBatch * b.out.Size())
		}
		b.dxShort = be.Alloc(maxBatch * b.in.Size())
	}
	size := maxBatch * b.out.Size()
	b.sum, b.y, b.dSum = be.Alloc(size), be.Alloc(size), be.Alloc(size)
	b.dx = be.Alloc(maxBatch * b.in.Size())
}

// OutShape is the per-sample output shape.
func (b *ResidualBlock) OutShape() Shape { return b.out }

func (b *ResidualBlock) Name() string     { return b.name }
func (b *ResidualBlock) OutFeatures() int { return b.out.Size() }

// Sublayers lists the block's layers (main path, then the projection),
// for Model.Binarizable.
func (b *ResidualBlock) Sublayers() []Layer {
	return append(append([]Layer{}, b.main...), b.proj...)
}

func (b *ResidualBlock) Params() []*Param {
	var out []*Param
	for _, l := range b.Sublayers() {
		out = append(out, l.Params()...)
	}
	return out
}

func (b *ResidualBlock) Buffers() []*Buffer {
	var out []*Buffer
	for _, l := range b.Sublayers() {
		out = append(out, l.Buffers()...)
	}
	return out
}

func (b *ResidualBlock) optionAShape(n int) backend.ShortcutShape {
	s := *b.optionA
	s.N = n
	return s
}

// Forward runs the main path and the shortcut and sums them. In training,
// on a backend with backend.FusedResidual, the main path's last batch norm,
// the sum and the ReLU run as one op.
func (b *ResidualBlock) Forward(x backend.Tensor, n int, train bool) backend.Tensor {
	r, fused := b.be.(backend.FusedResidual)
	b.endFused = train && fused
	main := b.main
	if b.endFused {
		main = main[:len(main)-1]
	}
	h := forwardLayers(b.be, main, x, n, train)
	sc := b.shortcut(x, n, train)
	if b.endFused {
		return b.lastBN().forwardAddReLU(r, h, sc, b.y, n)
	}
	size := n * b.out.Size()
	if f, ok := b.be.(backend.Fused); ok {
		f.AddReLU(b.y, h, sc, size)
		return b.y
	}
	b.be.Add(b.sum, h, sc, size)
	b.be.ReLUForward(b.y, b.sum, size)
	return b.y
}

// shortcut returns the shortcut's output for input x.
func (b *ResidualBlock) shortcut(x backend.Tensor, n int, train bool) backend.Tensor {
	switch {
	case b.proj != nil:
		return forwardLayers(b.be, b.proj, x, n, train)
	case b.optionA != nil:
		b.be.ShortcutAForward(b.sc, x, b.optionAShape(n))
		return b.sc
	}
	return x
}

// lastBN is the main path's final batch norm (every constructor ends the
// main path with one).
func (b *ResidualBlock) lastBN() *BatchNorm { return b.main[len(b.main)-1].(*BatchNorm) }

func (b *ResidualBlock) Backward(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	if b.endFused {
		return b.backwardFused(dy, n, needInputGrad)
	}
	b.be.ReLUBackward(b.dSum, dy, b.y, n*b.out.Size())
	g := backwardLayers(b.be, b.main, b.dSum, n, true)
	short := b.shortcutBackward(b.dSum, n, needInputGrad)
	if !needInputGrad {
		return nil
	}
	b.be.Add(b.dx, g, short, n*b.in.Size())
	return b.dx
}

// backwardFused is Backward after a fused Forward (backend.FusedResidual).
// The sum's gradient goes straight into the block's input gradient when
// the shortcut is the identity, the shortcut's gradient into its own
// buffer otherwise; the first convolution then adds its input gradient
// to it. (A projection's gradient is the projection's own buffer, and is
// summed with an Add.)
func (b *ResidualBlock) backwardFused(dy backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	f := b.be.(backend.FusedResidual)
	identity := b.proj == nil && b.optionA == nil
	dSum := b.dSum
	if identity && needInputGrad {
		dSum = b.dx
	}
	g := b.lastBN().backwardAddReLU(f, dy, b.y, dSum, n)
	g = backwardLayers(b.be, b.main[1:len(b.main)-1], g, n, true)
	first := b.main[0].(*Conv2D) // every constructor starts the main path with one
	short := b.shortcutBackward(dSum, n, needInputGrad)
	if !needInputGrad {
		first.Backward(g, n, false)
		return nil
	}
	if b.proj != nil {
		b.be.Add(b.dx, first.Backward(g, n, true), short, n*b.in.Size())
		return b.dx
	}
	first.backwardAdd(f, g, n, short)
	return short
}

// shortcutBackward returns the shortcut's input gradient for the gradient
// dSum of the block's sum (nil for option A without needInputGrad).
func (b *ResidualBlock) shortcutBackward(dSum backend.Tensor, n int, needInputGrad bool) backend.Tensor {
	switch {
	case b.proj != nil:
		return backwardLayers(b.be, b.proj, dSum, n, true)
	case b.optionA != nil:
		if !needInputGrad {
			return nil
		}
		b.be.ShortcutABackward(b.dxShort, dSum, b.optionAShape(n))
		return b.dxShort
	}
	return dSum
}

func (b *ResidualBlock) free(be backend.Backend) {
	for _, l := range b.Sublayers() {
		l.free(be)
	}
	for _, t := range []backend.Tensor{b.sc, b.sum, b.y, b.dSum, b.dx, b.dxShort} {
		if t != nil {
			be.Free(t)
		}
	}
}
