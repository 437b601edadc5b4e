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
// elements holds n, picks the layout the op runs in (elementwiseLayout),
// arranges the arguments it reads in it and notes it on those it writes.
// It returns their device pointers in argument order; ok is false (with
// the error recorded) where a check or a transpose failed.
func (b *Backend) elementwise(op string, n int, args ...elementwiseArg) (p [maxElementwiseArgs]cu.DevicePtr, ok bool) {
	if len(args) > maxElementwiseArgs {
		b.fail(fmt.Errorf("cuda: %s: %d tensor arguments, at most %d", op, len(args), maxElementwiseArgs))
		return p, false
	}
	var ts [maxElementwiseArgs]*tensor
	var inputs [maxElementwiseArgs]layout
	k := 0
	for i, a := range args {
		if ts[i] = b.tensorArg(op, a.name, a.t, n); ts[i] == nil {
			return p, false
		}
		if a.reads {
			inputs[k] = ts[i].lay
			k++
		}
	}
	lay := elementwiseLayout(n, inputs[:k]...)
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
	return p, b.err == nil
}

// activationLayout is the layout of an op's n×c×s activation: NHWC where
// channelsLastFor says the op runs so, else flat.
func (b *Backend) activationLayout(prefer bool, n, c, s int, inputs ...activation) layout {
	return layoutIf(channelsLastFor(prefer, inputs...), n, c, s)
}

// layoutIf is an n×c×s activation's layout in an op that runs in NHWC
// (nhwc) or NCHW.
func layoutIf(nhwc bool, n, c, s int) layout {
	if nhwc {
		return nhwcLayout(n, c, s)
	}
	return layout{}
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
// P of an NHWC batch norm over m rows of c channels: blocks of 32
// channels by 8 rows, about 1024 of them in all, each part at least 256
// rows.
func (b *Backend) bnPartialsNHWC(m, c int) (cu.DevicePtr, int) {
	chunks := (c + nhwcLanes - 1) / nhwcLanes
	parts := max(1, min(max(1, 1024/chunks), m/256))
	return b.grow(&b.bnPartials, &b.bnPartialsSize, c*parts, 16, 1<<20, "batch-norm partial sums"), parts
}

// The block of the NHWC partial-sum kernels: NHWC_LANES channels by
// NHWC_ROWS rows (batchnorm.cu).
const (
	nhwcLanes = 32
	nhwcRows  = 8
)

// launchNHWCPartial runs an NHWC partial-sum kernel over c channels in
// parts parts.
func (b *Backend) launchNHWCPartial(name string, c, parts int, args ...arg) {
	b.launchDims(name, [3]int{(c + nhwcLanes - 1) / nhwcLanes, parts, 1}, [3]int{nhwcLanes, nhwcRows, 1}, 0, args...)
}

// bnStatsNHWC is bnStats over NHWC x.
func (b *Backend) bnStatsNHWC(mean, inv, rm, rv, x cu.DevicePtr, s backend.BNShape, momentum, eps float32) {
	m := s.N * s.Spatial
	partials, parts := b.bnPartialsNHWC(m, s.C)
	if partials == 0 {
		return
	}
	b.launchNHWCPartial("bn_stats_partial_nhwc_f32", s.C, parts, ptrArg(partials), ptrArg(x), intArg(m), intArg(s.C))
	b.launch("bn_stats_final_warp_f32", warpBlocks(s.C), blockSize, 0, ptrArg(mean), ptrArg(inv), ptrArg(rm), ptrArg(rv),
		ptrArg(partials), intArg(parts), intArg(s.C), intArg(m), floatArg(momentum), floatArg(eps))
}
