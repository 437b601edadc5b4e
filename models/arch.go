package models

import (
	"fmt"
	"math/rand/v2"

	"iterbin/backend"
)

// VGGSpec describes the paper's VGG-style networks (the lottery-ticket
// Conv-2/4/6): 3×3 convolutions with padding 1 and bias, each followed by
// batch norm and ReLU, 2×2 max pools, then fully connected layers, each
// hidden one followed by batch norm and ReLU and the last by batch norm.
type VGGSpec struct {
	Name    string
	Input   Shape
	Convs   []int // output channels per conv; 0 is a 2×2 max pool
	FC      []int // hidden widths of the fully connected layers
	Classes int
}

// VGG5 is the lottery-ticket Conv-2: 2×conv64, pool, FC 256, 256, classes.
func VGG5(input Shape, classes int) VGGSpec {
	return VGGSpec{Name: "vgg5", Input: input, Convs: []int{64, 64, 0}, FC: []int{256, 256}, Classes: classes}
}

// VGG9 is the lottery-ticket Conv-6: 2×conv64, pool, 2×conv128, pool,
// 2×conv256, pool, FC 256, 256, classes.
func VGG9(input Shape, classes int) VGGSpec {
	return VGGSpec{Name: "vgg9", Input: input, Convs: []int{64, 64, 0, 128, 128, 0, 256, 256, 0}, FC: []int{256, 256}, Classes: classes}
}

// NewVGG builds a VGG network with layers conv1…, fc1….
func NewVGG(be backend.Backend, spec VGGSpec, maxBatch int, bin Binarizer, rng *rand.Rand) (*Model, error) {
	if err := checkBinarizer(bin); err != nil {
		return nil, err
	}
	m := &Model{Arch: spec.Name, Input: spec.Input.Size(), Classes: spec.Classes, MaxBatch: maxBatch, be: be}
	shape := spec.Input
	conv, pool := 0, 0
	for _, c := range spec.Convs {
		if c == 0 {
			if shape.H < 2 || shape.W < 2 {
				return nil, fmt.Errorf("models: %s: input %dx%d too small for another 2×2 pool", spec.Name, shape.H, shape.W)
			}
			pool++
			p := NewMaxPool2D(be, fmt.Sprintf("pool%d", pool), shape, 2, 2, 0, maxBatch)
			m.layers = append(m.layers, p)
			shape = p.OutShape()
			continue
		}
		conv++
		name := fmt.Sprintf("conv%d", conv)
		l := NewConv2D(be, name, shape, c, 3, 1, 1, true, maxBatch, bin, InitPyTorchDefault, rng)
		shape = l.OutShape()
		m.layers = append(m.layers, l,
			NewBatchNorm(be, name+".bn", shape.C, shape.H*shape.W, maxBatch),
			NewReLU(be, name+".relu", shape.Size(), maxBatch))
	}
	m.layers = append(m.layers, NewFlatten("flatten", shape))
	widths := append(append([]int{shape.Size()}, spec.FC...), spec.Classes)
	for i := 1; i < len(widths); i++ {
		name := fmt.Sprintf("fc%d", i)
		m.layers = append(m.layers,
			NewDense(be, name, widths[i-1], widths[i], maxBatch, bin, rng),
			NewBatchNorm(be, name+".bn", widths[i], 1, maxBatch))
		if i < len(widths)-1 {
			m.layers = append(m.layers, NewReLU(be, name+".relu", widths[i], maxBatch))
		}
	}
	return m.finish()
}

// ResNetCIFARSpec describes the CIFAR ResNets of He et al. (6n+2 layers):
// conv3×3 16, three stages of n basic blocks with 16, 32, 64 channels
// (stride 2 at the start of stages 2 and 3, option-A shortcuts), global
// average pooling and a fully connected layer with bias.
type ResNetCIFARSpec struct {
	Name           string
	Input          Shape
	BlocksPerStage int
	Widths         [3]int
	Classes        int
}

// ResNet20 is the 20-layer CIFAR ResNet (3 blocks per stage).
func ResNet20(input Shape, classes int) ResNetCIFARSpec {
	return ResNetCIFARSpec{Name: "resnet20", Input: input, BlocksPerStage: 3, Widths: [3]int{16, 32, 64}, Classes: classes}
}

// NewResNetCIFAR builds a CIFAR ResNet with layers conv1,
// stageS.blockB.conv1/conv2 and fc; convolutions have no bias and
// Kaiming-normal weights.
func NewResNetCIFAR(be backend.Backend, spec ResNetCIFARSpec, maxBatch int, bin Binarizer, rng *rand.Rand) (*Model, error) {
	if err := checkBinarizer(bin); err != nil {
		return nil, err
	}
	m := &Model{Arch: spec.Name, Input: spec.Input.Size(), Classes: spec.Classes, MaxBatch: maxBatch, be: be}
	stem := NewConv2D(be, "conv1", spec.Input, spec.Widths[0], 3, 1, 1, false, maxBatch, bin, InitKaimingNormal, rng)
	shape := stem.OutShape()
	m.layers = append(m.layers, stem, NewBatchNorm(be, "bn1", shape.C, shape.H*shape.W, maxBatch), NewReLU(be, "relu1", shape.Size(), maxBatch))
	for st, width := range spec.Widths {
		for bl := 0; bl < spec.BlocksPerStage; bl++ {
			stride := 1
			if st > 0 && bl == 0 {
				stride = 2
			}
			b := NewBasicBlock(be, fmt.Sprintf("stage%d.block%d", st+1, bl+1), shape, width, stride, maxBatch, ShortcutOptionA, bin, InitKaimingNormal, rng)
			m.layers = append(m.layers, b)
			shape = b.OutShape()
		}
	}
	fc := NewDense(be, "fc", shape.C, spec.Classes, maxBatch, bin, rng)
	be.Upload(fc.w.Value, initWeights(rng, fc.w.Len(), shape.C, spec.Classes, InitKaimingNormal))
	m.layers = append(m.layers, NewGlobalAvgPool(be, "pool", shape, maxBatch), fc)
	return m.finish()
}

// ResNetSpec describes torchvision's ImageNet ResNets: a 7×7 stride-2
// stem, 3×3 stride-2 max pool, four stages of basic or bottleneck blocks
// (64, 128, 256, 512 channels, projection shortcuts), global average
// pooling and a fully connected layer with bias.
type ResNetSpec struct {
	Name       string
	Input      Shape
	Blocks     [4]int
	Bottleneck bool
	Classes    int
}

// ResNet18, ResNet34 and ResNet50 are torchvision's layouts.
func ResNet18(input Shape, classes int) ResNetSpec {
	return ResNetSpec{Name: "resnet18", Input: input, Blocks: [4]int{2, 2, 2, 2}, Classes: classes}
}

func ResNet34(input Shape, classes int) ResNetSpec {
	return ResNetSpec{Name: "resnet34", Input: input, Blocks: [4]int{3, 4, 6, 3}, Classes: classes}
}

func ResNet50(input Shape, classes int) ResNetSpec {
	return ResNetSpec{Name: "resnet50", Input: input, Blocks: [4]int{3, 4, 6, 3}, Bottleneck: true, Classes: classes}
}

// NewResNet builds a torchvision-style ResNet with torchvision's layer
// names (conv1, layer2.0.conv1, layer2.0.downsample.0, fc) and init
// (Kaiming-normal fan-out convolutions, default fully connected layer).
func NewResNet(be backend.Backend, spec ResNetSpec, maxBatch int, bin Binarizer, rng *rand.Rand) (*Model, error) {
	if err := checkBinarizer(bin); err != nil {
		return nil, err
	}
	m := &Model{Arch: spec.Name, Input: spec.Input.Size(), Classes: spec.Classes, MaxBatch: maxBatch, be: be}
	stem := NewConv2D(be, "conv1", spec.Input, 64, 7, 2, 3, false, maxBatch, bin, InitKaimingNormalFanOut, rng)
	shape := stem.OutShape()
	pool := NewMaxPool2D(be, "maxpool", shape, 3, 2, 1, maxBatch)
	m.layers = append(m.layers, stem, NewBatchNorm(be, "bn1", shape.C, shape.H*shape.W, maxBatch), NewReLU(be, "relu", shape.Size(), maxBatch), pool)
	shape = pool.OutShape()
	if shape.H < 1 || shape.W < 1 {
		return nil, fmt.Errorf("models: %s: input %dx%d too small", spec.Name, spec.Input.H, spec.Input.W)
	}
	for st, n := range spec.Blocks {
		width := 64 << st
		for bl := 0; bl < n; bl++ {
			stride := 1
			if st > 0 && bl == 0 {
				stride = 2
			}
			name := fmt.Sprintf("layer%d.%d", st+1, bl)
			var b *ResidualBlock
			if spec.Bottleneck {
				b = NewBottleneck(be, name, shape, width, stride, maxBatch, bin, InitKaimingNormalFanOut, rng)
			} else {
				b = NewBasicBlock(be, name, shape, width, stride, maxBatch, ShortcutProjection, bin, InitKaimingNormalFanOut, rng)
			}
			m.layers = append(m.layers, b)
			shape = b.OutShape()
		}
	}
	m.layers = append(m.layers, NewGlobalAvgPool(be, "avgpool", shape, maxBatch), NewDense(be, "fc", shape.C, spec.Classes, maxBatch, bin, rng))
	return m.finish()
}

// finish adds the criterion and checks the backend took every allocation.
func (m *Model) finish() (*Model, error) {
	m.loss = NewCrossEntropy(m.be, m.Classes, m.MaxBatch)
	m.binarizable = findBinarizable(m.layers)
	if err := m.be.Err(); err != nil {
		m.Free()
		return nil, err
	}
	return m, nil
}
