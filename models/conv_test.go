package models

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"iterbin/backend"
	"iterbin/backend/cpu"
)

func TestConv2DGradientsMatchFiniteDifferences(t *testing.T) {
	for _, c := range []struct {
		name                    string
		in                      Shape
		oc, kernel, stride, pad int
		bias                    bool
	}{
		{"3x3 pad1", Shape{2, 5, 6}, 3, 3, 1, 1, true},
		{"3x3 stride2 pad1", Shape{3, 7, 5}, 2, 3, 2, 1, false},
		{"1x1 stride1", Shape{4, 3, 3}, 5, 1, 1, 0, true},
		{"1x1 stride2", Shape{2, 5, 5}, 3, 1, 2, 0, false},
		{"7x7 stride2 pad3", Shape{1, 9, 9}, 2, 7, 2, 3, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := f64{cpu.NewFloat64()}
			rng := rand.New(rand.NewPCG(11, 11))
			l := NewConv2D(h.be, "conv", c.in, c.oc, c.kernel, c.stride, c.pad, c.bias, 3, Binarizer{STE: STEIdentity}, InitKaimingNormal, rng)
			layerCheck(t, h, l, c.in.Size(), 3, rng)
		})
	}
}

func TestPoolingGradientsMatchFiniteDifferences(t *testing.T) {
	h := f64{cpu.NewFloat64()}
	rng := rand.New(rand.NewPCG(12, 12))
	in := Shape{3, 6, 5} // odd width: the last column is outside every 2×2 window
	layerCheck(t, h, NewMaxPool2D(h.be, "pool", in, 2, 2, 0, 2), in.Size(), 2, rng)
	layerCheck(t, h, NewMaxPool2D(h.be, "pool3s2p1", in, 3, 2, 1, 2), in.Size(), 2, rng)
	layerCheck(t, h, NewGlobalAvgPool(h.be, "gap", in, 2), in.Size(), 2, rng)
}

func TestResidualBlockGradientsMatchFiniteDifferences(t *testing.T) {
	for _, c := range []struct {
		name       string
		kind       string
		in         Shape
		oc, stride int
	}{
		{"identity shortcut", "optionA", Shape{4, 5, 5}, 4, 1},
		{"option A, stride 2, channels doubled", "optionA", Shape{2, 6, 5}, 4, 2},
		{"projection shortcut, stride 2", "projection", Shape{2, 6, 5}, 4, 2},
		{"bottleneck, width 2, stride 2", "bottleneck", Shape{3, 5, 6}, 2, 2},
		{"bottleneck, identity", "bottleneck", Shape{8, 4, 4}, 2, 1},
	} {
		for _, fused := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s fused=%v", c.name, fused), func(t *testing.T) {
				h := f64{cpu.NewFloat64()}
				// The block runs its fused ops on the CPU backend, its
				// unfused ones on the same backend with them hidden.
				var be backend.Backend = h.be
				if !fused {
					be = plainBackend{h.be}
				}
				residualBlockCheck(t, h, be, c.kind, c.in, c.oc, c.stride)
			})
		}
	}
}

// plainBackend offers only the Backend interface of the backend in it,
// none of its optional ones (Fused, FusedResidual).
type plainBackend struct{ backend.Backend }

func residualBlockCheck(t *testing.T, h f64, be backend.Backend, kind string, in Shape, oc, stride int) {
	rng := rand.New(rand.NewPCG(13, 13))
	var b *ResidualBlock
	switch kind {
	case "optionA":
		b = NewBasicBlock(be, "block", in, oc, stride, 3, ShortcutOptionA, Binarizer{STE: STEIdentity}, InitKaimingNormal, rng)
	case "projection":
		b = NewBasicBlock(be, "block", in, oc, stride, 3, ShortcutProjection, Binarizer{STE: STEIdentity}, InitKaimingNormalFanOut, rng)
	case "bottleneck":
		b = NewBottleneck(be, "block", in, oc, stride, 3, Binarizer{STE: STEIdentity}, InitKaimingNormalFanOut, rng)
	}
	for _, l := range b.Sublayers() {
		if bn, ok := l.(*BatchNorm); ok {
			h.put(bn.gamma.Value, normals(rng, bn.shape.C))
			h.put(bn.beta.Value, normals(rng, bn.shape.C))
		}
	}
	layerCheck(t, h, b, in.Size(), 3, rng)
}

func TestShortcutAMatchesPyTorchSlicingAndPadding(t *testing.T) {
	// PyTorch: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4)).
	be := cpu.New()
	const n, c, hh, ww, oc = 2, 2, 3, 4, 4
	xs := make([]float32, n*c*hh*ww)
	for i := range xs {
		xs[i] = float32(i + 1)
	}
	x := be.Alloc(len(xs))
	be.Upload(x, xs)
	b := NewBasicBlock(be, "b", Shape{c, hh, ww}, oc, 2, n, ShortcutOptionA, Binarizer{STE: STEIdentity}, InitKaimingNormal, rand.New(rand.NewPCG(1, 1)))
	be.ShortcutAForward(b.sc, x, b.optionAShape(n))
	got := make([]float32, n*oc*2*2)
	be.Download(got, b.sc)
	for s := 0; s < n; s++ {
		for o := 0; o < oc; o++ {
			for i := 0; i < 2; i++ {
				for j := 0; j < 2; j++ {
					want := float32(0)
					if ch := o - 1; ch >= 0 && ch < c {
						want = xs[((s*c+ch)*hh+2*i)*ww+2*j]
					}
					if g := got[((s*oc+o)*2+i)*2+j]; g != want {
						t.Fatalf("y[%d,%d,%d,%d] = %v, want %v", s, o, i, j, g, want)
					}
				}
			}
		}
	}
}

func TestBinaryConvEqualsFloatConvFedSignW(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(14, 14))
	in := Shape{3, 8, 7}
	const n = 4
	bin := NewConv2D(be, "a", in, 5, 3, 2, 1, true, n, Binarizer{STE: STEIdentity}, InitPyTorchDefault, rng)
	flt := NewConv2D(be, "b", in, 5, 3, 2, 1, true, n, Binarizer{STE: STEIdentity}, InitPyTorchDefault, rng)
	be.Sign(flt.w.Value, bin.w.Value, bin.w.Len())
	be.Copy(flt.b.Value, bin.b.Value, 5)
	bin.SetBinary(true)
	xs := make([]float32, n*in.Size())
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	x := be.Alloc(len(xs))
	be.Upload(x, xs)
	out := n * bin.OutFeatures()
	got, want := make([]float32, out), make([]float32, out)
	be.Download(got, bin.Forward(x, n, true))
	be.Download(want, flt.Forward(x, n, true))
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("binary conv output[%d] = %v, float conv fed sign(W) gives %v", i, got[i], want[i])
		}
	}
}

// Parameter and binarizable-layer counts, computed by hand from the
// architectures' definitions.
func TestConvArchitectureCounts(t *testing.T) {
	be := cpu.New()
	bin := Binarizer{STE: STEIdentity}
	cifar := Shape{3, 32, 32}
	bnp := func(c int) int { return 2 * c }
	vgg5 := (3*64*9 + 64) + bnp(64) + (64*64*9 + 64) + bnp(64) +
		(16384*256 + 256) + bnp(256) + (256*256 + 256) + bnp(256) + (256*10 + 10) + bnp(10)
	vgg9 := (3*64*9 + 64) + (64*64*9 + 64) + (64*128*9 + 128) + (128*128*9 + 128) + (128*256*9 + 256) + (256*256*9 + 256) +
		bnp(64)*2 + bnp(128)*2 + bnp(256)*2 +
		(4096*256 + 256) + bnp(256) + (256*256 + 256) + bnp(256) + (256*10 + 10) + bnp(10)
	for _, c := range []struct {
		name     string
		build    func() (*Model, error)
		params   int
		layers   int
		first    string
		last     string
		contains string
	}{
		{"vgg5", func() (*Model, error) { return NewVGG(be, VGG5(cifar, 10), 2, bin, rand.New(rand.NewPCG(1, 1))) }, vgg5, 5, "conv1", "fc3", "fc1"},
		{"vgg9", func() (*Model, error) { return NewVGG(be, VGG9(cifar, 10), 2, bin, rand.New(rand.NewPCG(1, 1))) }, vgg9, 9, "conv1", "fc3", "conv6"},
		// 269,722: the published parameter count of ResNet-20 (option A).
		{"resnet20", func() (*Model, error) {
			return NewResNetCIFAR(be, ResNet20(cifar, 10), 2, bin, rand.New(rand.NewPCG(1, 1)))
		}, 269722, 20, "conv1", "fc", "stage2.block1.conv2"},
	} {
		m, err := c.build()
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, p := range m.Params() {
			total += p.Len()
		}
		var names []string
		for _, l := range m.Binarizable() {
			names = append(names, l.Name())
		}
		if total != c.params || len(names) != c.layers || names[0] != c.first || names[len(names)-1] != c.last {
			t.Errorf("%s: %d parameters, binarizable %v; want %d parameters, %d layers %s…%s", c.name, total, names, c.params, c.layers, c.first, c.last)
		}
		found := false
		for _, n := range names {
			found = found || n == c.contains
		}
		if !found {
			t.Errorf("%s: no layer named %s in %v", c.name, c.contains, names)
		}
		m.Free()
	}
}

// A whole ResNet-20 on a tiny input: every parameter gradient against finite
// differences of the loss (float64), a subset of elements per tensor.
func TestTinyResNetGradients(t *testing.T) {
	h := f64{cpu.NewFloat64()}
	rng := rand.New(rand.NewPCG(15, 15))
	const n = 3
	spec := ResNetCIFARSpec{Name: "tiny", Input: Shape{2, 6, 6}, BlocksPerStage: 1, Widths: [3]int{2, 4, 6}, Classes: 3}
	m, err := NewResNetCIFAR(h.be, spec, n, Binarizer{STE: STEIdentity}, rng)
	if err != nil {
		t.Fatal(err)
	}
	modelGradCheck(t, h, m, normals(rng, n*spec.Input.Size()), []float64{0, 2, 1}, 1)
}

// torchvision's parameter counts: resnet18 11,689,512; resnet34
// 21,797,672; resnet50 25,557,032.
func TestImageNetResNetCountsAndNames(t *testing.T) {
	be := cpu.New()
	defer be.Close()
	bin := Binarizer{STE: STEIdentity}
	in := Shape{3, 224, 224}
	for _, c := range []struct {
		spec   ResNetSpec
		params int
		layers int
		names  []string
	}{
		{ResNet18(in, 1000), 11689512, 21, []string{"conv1", "layer1.0.conv1", "layer2.0.downsample.0", "layer4.1.conv2", "fc"}},
		{ResNet34(in, 1000), 21797672, 37, []string{"layer3.5.conv2", "layer4.0.downsample.0"}},
		{ResNet50(in, 1000), 25557032, 54, []string{"layer1.0.conv3", "layer1.0.downsample.0", "layer4.2.conv3"}},
	} {
		m, err := NewResNet(be, c.spec, 1, bin, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, p := range m.Params() {
			total += p.Len()
		}
		var names []string
		for _, l := range m.Binarizable() {
			names = append(names, l.Name())
		}
		if total != c.params || len(names) != c.layers {
			t.Errorf("%s: %d parameters, %d binarizable layers; want %d and %d", c.spec.Name, total, len(names), c.params, c.layers)
		}
		for _, n := range c.names {
			if !slices.Contains(names, n) {
				t.Errorf("%s has no layer %s: %v", c.spec.Name, n, names)
			}
		}
		if c.spec.Name == "resnet18" && (names[0] != "conv1" || names[20] != "fc") {
			t.Errorf("resnet18 layers %v", names)
		}
		m.Free()
	}
}

// A tiny torchvision-style ResNet trains a step on the float64 backend
// with gradients matching finite differences.
func TestTinyImageNetResNetGradients(t *testing.T) {
	h := f64{cpu.NewFloat64()}
	rng := rand.New(rand.NewPCG(16, 16))
	const n = 2
	spec := ResNetSpec{Name: "tiny", Input: Shape{3, 9, 9}, Blocks: [4]int{1, 1, 0, 0}, Bottleneck: true, Classes: 3}
	m, err := NewResNet(h.be, spec, n, Binarizer{STE: STEIdentity}, rng)
	if err != nil {
		t.Fatal(err)
	}
	// Every tensor, about six elements of each (the blocks' own tests
	// check every element).
	modelGradCheck(t, h, m, normals(rng, n*spec.Input.Size()), []float64{0, 2}, 6)
}

// A ResNet-20 training step in float32 gives the same bits with the CPU's
// fused ops (batch norm + ReLU, the residual blocks' ends, the input
// gradients added in place) as with the ops one by one: loss sums, every
// parameter gradient and the running statistics.
func TestResNetFusedStepEqualsUnfused(t *testing.T) {
	const n = 3
	rng := rand.New(rand.NewPCG(21, 22))
	cifar := Shape{3, 32, 32}
	x := make([]float32, n*cifar.Size())
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	labels := []float32{3, 0, 9}
	type result struct{ sums, grads, buffers [][]float32 }
	run := func(be backend.Backend) result {
		m, err := NewResNetCIFAR(be, ResNet20(cifar, 10), n, Binarizer{STE: STEIdentity}, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		xt, lt, sums := be.Alloc(len(x)), be.Alloc(n), be.Alloc(3)
		be.Upload(xt, x)
		be.Upload(lt, labels)
		var r result
		for range 2 { // the second step starts from moved running statistics
			be.Fill(sums, 0, 3)
			m.Forward(sums, xt, lt, n, true)
			m.Backward(lt, n)
			s := make([]float32, 3)
			be.Download(s, sums)
			r.sums = append(r.sums, s)
		}
		for _, p := range m.Params() {
			g := make([]float32, p.Len())
			be.Download(g, p.Grad)
			r.grads = append(r.grads, g)
		}
		for _, b := range m.Buffers() {
			v := make([]float32, b.Len)
			be.Download(v, b.Value)
			r.buffers = append(r.buffers, v)
		}
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	fusedBE, plainBE := cpu.New(), cpu.New()
	defer fusedBE.Close()
	defer plainBE.Close()
	fused, plain := run(fusedBE), run(plainBackend{plainBE})
	for i := range fused.sums {
		if !slices.Equal(fused.sums[i], plain.sums[i]) {
			t.Fatalf("step %d loss sums: fused %v, unfused %v", i, fused.sums[i], plain.sums[i])
		}
	}
	for i := range fused.grads {
		if !slices.Equal(fused.grads[i], plain.grads[i]) {
			t.Fatalf("gradient %d differs between the fused and unfused ops", i)
		}
	}
	for i := range fused.buffers {
		if !slices.Equal(fused.buffers[i], plain.buffers[i]) {
			t.Fatalf("buffer %d differs between the fused and unfused ops", i)
		}
	}
}
