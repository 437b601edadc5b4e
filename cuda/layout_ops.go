//go:build cuda

package cuda

// The device side of channels-last activations (layout.go): how ops
// check, arrange and note the layouts of their arguments.

import (
	"fmt"

	"gorgonia.org/cu"

	"iterbin/backend"
)

// elementwiseArg is one tensor argument of an elementwise op: whether the
// op reads it, writes it, or both.
type elementwiseArg struct {
	name          string
	t             backend.Tensor
	reads, writes bool
}

func read(name string, t backend.Tensor) elementwiseArg { return elementwiseArg{name, t, true, false} }
func written(name string, t backend.Tensor) elementwiseArg {
	return elementwiseArg{name, t, false, true}
}
func readWritten(name string, t backend.Tensor) elementwiseArg {
	return elementwiseArg{name, t, true, true}
}

// maxElementwiseArgs is the most tensors an elementwise op takes
// (AdamStep's four).
const maxElementwiseArgs = 4

// elementwise checks that each argument of an elementwise op over n
// elements holds n, picks the layout the op runs in (elementwiseLayout,
// float32), arranges the arguments it reads in it and notes it on those
// it writes. It returns their device pointers in argument order; ok is
// false (with the error recorded) where a check or a reordering failed.
func (b *Backend) elementwise(op string, n int, args ...elementwiseArg) (p [maxElementwiseArgs]cu.DevicePtr, ok bool) {
	p, _, ok = b.elementwiseIn(op, n, false, args...)
	return p, ok
}

// elementwiseStored is elementwise for an op that has 16-bit kernels too:
// it runs in 16 bits where every input is stored so (elementwiseLayout),
// and suffix names the kernels to run, "f32", "bf16" or "f16".
func (b *Backend) elementwiseStored(op string, n int, args ...elementwiseArg) (p [maxElementwiseArgs]cu.DevicePtr, suffix string, ok bool) {
	p, lay, ok := b.elementwiseIn(op, n, true, args...)
	return p, storageSuffix(lay), ok
}

// storageSuffix is the suffix of the kernels over activations in layout
// lay (storage.cuh).
func storageSuffix(lay layout) string { return lay.half.kernelSuffix() }

// elementwiseIn is elementwise, in 16 bits too where halfOK (the op has
// 16-bit kernels); lay is the layout the op runs in.
func (b *Backend) elementwiseIn(op string, n int, halfOK bool, args ...elementwiseArg) (p [maxElementwiseArgs]cu.DevicePtr, lay layout, ok bool) {
	if len(args) > maxElementwiseArgs {
		b.fail(fmt.Errorf("cuda: %s: %d tensor arguments, at most %d", op, len(args), maxElementwiseArgs))
		return p, lay, false
	}
	var ts [maxElementwiseArgs]*tensor
	var inputs [maxElementwiseArgs]layout
	k := 0
	for i, a := range args {
		if ts[i] = b.tensorArg(op, a.name, a.t, n); ts[i] == nil {
			return p, lay, false
		}
		if a.reads {
			inputs[k] = ts[i].lay
			k++
		}
	}
	lay = elementwiseLayout(n, halfOK, inputs[:k]...)
	for i, a := range args {
		if a.reads {
			p[i] = b.arrange(ts[i], lay)
		}
	}
	for i, a := range args {
		if a.writes {
			b.noteWrite(ts[i], n, lay)
			p[i] = ts[i].ptr
		}
	}
	return p, lay, b.err == nil
}

// activationLayout is the float32 layout of an op's n×c×s activation:
// NHWC where channelsLastFor says the op runs so, else flat.
func (b *Backend) activationLayout(prefer bool, n, c, s int, inputs ...activation) layout {
	return layoutIf(channelsLastFor(prefer, inputs...), n, c, s)
}

// layoutIf is an n×c×s activation's float32 layout in an op that runs in
// NHWC (nhwc) or NCHW.
func layoutIf(nhwc bool, n, c, s int) layout {
	if nhwc {
		return nhwcLayout(n, c, s)
	}
	return layout{}
}

// storedLayout is the layout of an n×c×s activation in an op that has
// 16-bit kernels, given its activation inputs and its activation outputs'
// shapes (outs): the float32 layout activationLayout picks, in the
// storage format where it is NHWC and halfFor says so (with no input,
// where 16-bit storage is on).
func (b *Backend) storedLayout(prefer bool, outs [][3]int, n, c, s int, inputs ...activation) layout {
	lay := b.activationLayout(prefer, n, c, s, inputs...)
	if lay.nhwc && halfFor(b.storage, outs, inputs...) {
		lay = lay.inHalf(b.storage)
	}
	return lay
}

// activationIn checks an op's activation input t (an n×c×s activation)
// and returns it with its current layout for channelsLastFor; nil (with
// the error recorded) where a check fails.
func (b *Backend) activationIn(op, arg string, t backend.Tensor, n, c, s int) (*tensor, activation) {
	ct := b.tensorArg(op, arg, t, n*c*s)
	if ct == nil {
		return nil, activation{}
	}
	return ct, activation{have: ct.lay, n: n, c: c, s: s}
}

// bnPartialsNHWC returns the partial-sums buffer and the number of parts
// P of an NHWC batch norm over m rows of c channels taken in packs of w
// (packedKernel): about 1024 blocks in all (nhwcPartialBlock), each part
// at least 256 rows.
func (b *Backend) bnPartialsNHWC(m, c, w int) (cu.DevicePtr, int) {
	_, _, chunks := nhwcPartialBlock(c, w)
	parts := max(1, min(max(1, 1024/chunks), m/256))
	return b.grow(&b.bnPartials, &b.bnPartialsSize, c*parts, 16, 1<<20, "batch-norm partial sums"), parts
}

// launchNHWCPartial runs an NHWC partial-sum kernel over c channels in
// packs of w, in parts parts.
func (b *Backend) launchNHWCPartial(name string, c, w, parts int, args ...arg) {
	lanes, rows, chunks := nhwcPartialBlock(c, w)
	b.launchDims(name, [3]int{chunks, parts, 1}, [3]int{lanes, rows, 1}, 0, args...)
}

// bnStatsNHWC is bnStats over NHWC x, stored as layout lay says.
func (b *Backend) bnStatsNHWC(mean, inv, rm, rv, x cu.DevicePtr, lay layout, s backend.BNShape, momentum, eps float32) {
	m := s.N * s.Spatial
	name, w := packedKernel("bn_stats_partial_nhwc_", lay, s.C, uintptr(x))
	partials, parts := b.bnPartialsNHWC(m, s.C, w)
	if partials == 0 {
		return
	}
	b.launchNHWCPartial(name, s.C, w, parts, ptrArg(partials), ptrArg(x), intArg(m), intArg(s.C))
	b.launch("bn_stats_final_warp_f32", warpBlocks(s.C), blockSize, 0, ptrArg(mean), ptrArg(inv), ptrArg(rm), ptrArg(rv),
		ptrArg(partials), intArg(parts), intArg(s.C), intArg(m), floatArg(momentum), floatArg(eps))
}
