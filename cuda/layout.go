package cuda

// Channels-last activations (Options.Layout). The Backend interface is
// NCHW: Upload, Download and every op's arguments describe a tensor in
// that order. With channels-last on, the backend stores the activations
// of convolutional layers as NHWC instead, where cuDNN's tensor-core
// convolutions are fastest, and keeps in each tensor a note of the order
// its first elements are in (a layout). Every op reads each argument
// through that note, transposing it on the device where it is not in the
// order the op's kernels need, and notes the order of what it writes, so
// what Download returns never depends on where the data went in between.
//
// Which order an op computes in:
//   - convolutions: NHWC (activations and filters, KH·KW the filter's
//     positions) where channels-last is on and cuDNN runs them, else NCHW;
//   - batch norm, pooling, the option-A shortcut, bias and their
//     gradients: NHWC where one of their activation inputs is already
//     NHWC, else NCHW; an op with no activation input (global average
//     pooling's backward pass) writes NHWC where channels-last is on;
//   - elementwise ops (Add, ReLU, Copy, Sign, optimizer steps…): the
//     order of an input that is NHWC over exactly the op's elements, the
//     other inputs transposed to it; else flat;
//   - everything else (Gemm, losses, Upload, Download): flat.
//
// So in a network the transposes happen where data enters or leaves the
// convolutional part: the input batch, a flatten into a dense layer and
// its gradient, and downloads of weights for checkpoints. Filters become
// NHWC at their first convolution and stay so, their gradients and
// optimizer state with them. A tensor's elements past those its layout
// covers are in flat order: an op that writes fewer elements than the
// layout covers (buffers are sized for the largest batch) first puts the
// rest back (prepareWrite), so that what it does not write keeps its
// values, as the Backend interface requires.
//
// In strict fp32 channels-last is off by default (Options.Layout):
// cuDNN's NHWC kernels without tensor cores run ResNet-18 at half its
// NCHW speed on an H200.
//
// 16-bit storage (Options.Layout auto or nhwc-bf16 at precision bf16,
// auto or nhwc-fp16 at fp16, where cuDNN runs) also keeps the NHWC activations and their gradients in the
// precision's 16-bit format, half the bytes for the memory-bound ops
// between convolutions, as PyTorch's autocast does:
//   - convolutions on cuDNN write their activation outputs (forward y,
//     backward-data dx) in 16 bits, and read activation inputs held so
//     directly instead of rounding a copy;
//   - batch norm, ReLU, Add, max pooling, the option-A shortcut and
//     Copy read and write 16-bit values where every activation input is
//     16-bit (halfFor, elementwiseLayout), computing and summing in
//     float32 and double as they do otherwise; global average pooling's
//     backward pass writes 16 bits;
//   - every other op, and any op with an input in float32, reads its
//     inputs widened to float32 in place (reorders), which is exact.
// Weights, their gradients, batch norm's parameters and statistics,
// optimizer state and losses stay float32. Nothing is rounded to 16 bits
// in place: a value is 16-bit because an op computed it so.

import "fmt"

// halfFormat is a 16-bit format, "bf16" or "fp16": a mixed precision's
// (Backend.half), or the one activations are stored in; "" for none
// (float32).
type halfFormat string

// on says whether h is a 16-bit format.
func (h halfFormat) on() bool { return h != "" }

// kernelSuffix is the suffix of the kernels over activations stored in h
// (storage.cuh): "f32", "bf16" or "f16".
func (h halfFormat) kernelSuffix() string {
	switch h {
	case "":
		return "f32"
	case FP16:
		return "f16"
	}
	return string(h)
}

// layout says in which order, and as what, the first elements of a
// device buffer are stored. The zero value is flat float32, the order of
// the Backend interface.
type layout struct {
	// nhwc: the first n·c·s elements are an n×c×s activation (n samples,
	// c channels, s positions) stored n×s×c, element (i, ch, j) at
	// (i·s + j)·c + ch.
	nhwc bool
	// half (only with nhwc) is the 16-bit format those n·c·s elements
	// are stored in, the k-th at byte 2k (16-bit storage, above); "" is
	// float32. Elements past them stay float32 at
	// their own place, element e at byte 4e, so a buffer of float32s
	// holds either.
	half    halfFormat
	n, c, s int
}

// nhwcLayout is the channels-last float32 layout of an n×c×s activation;
// where its two orders coincide (one channel or one position) it is flat.
func nhwcLayout(n, c, s int) layout {
	if c == 1 || s == 1 || n*c*s == 0 {
		return layout{}
	}
	return layout{nhwc: true, n: n, c: c, s: s}
}

// inHalf is l stored in format h ("" for float32); flat stays flat
// (float32).
func (l layout) inHalf(h halfFormat) layout {
	if l.nhwc {
		l.half = h
	}
	return l
}

// inFloat32 is l stored as float32.
func (l layout) inFloat32() layout {
	l.half = ""
	return l
}

// as is the layout of an op's n×c×s activation where its others are in
// layout l: NHWC in l's type where l is NHWC (flat where NHWC stores that
// shape flat, as float32), else flat.
func (l layout) as(n, c, s int) layout {
	if !l.nhwc {
		return layout{}
	}
	return nhwcLayout(n, c, s).inHalf(l.half)
}

// elemBytes is the size of one of the elements l orders.
func (l layout) elemBytes() int {
	if l.half.on() {
		return 2
	}
	return 4
}

// count is the number of elements the layout orders; 0 for flat.
func (l layout) count() int {
	if !l.nhwc {
		return 0
	}
	return l.n * l.c * l.s
}

// holds says whether a tensor in layout l stores the first elements in
// layout want: as want's type, in l's channels and positions and at
// least want's samples (a smaller batch of the same activation is a
// prefix of it).
func (l layout) holds(want layout) bool {
	if !want.nhwc {
		return !l.nhwc
	}
	return l.nhwc && l.half == want.half && l.c == want.c && l.s == want.s && l.n >= want.n
}

// reorder is one in-place change of a tensor's first elements from
// layout from to layout to over the same elements: a transpose between
// flat and NHWC, 16-bit values widened to float32 on the way where from
// is 16-bit; or, between the same NHWC shape, the widening alone. Nothing
// is ever rounded to 16 bits in place: what ops write so they compute so.
type reorder struct {
	from, to layout
}

// shape is the n×c×s activation r reorders (its NHWC side's).
func (r reorder) shape() (n, c, s int) {
	l := r.from
	if !l.nhwc {
		l = r.to
	}
	return l.n, l.c, l.s
}

// reorders lists the reorderings, in order, that take a tensor from
// layout have to layout want (the first k of steps): none where have
// holds want; have's 16-bit elements widened where want is the float32
// NHWC of a shape have holds; otherwise have's NHWC elements back to
// flat float32, then on to want's NHWC. A 16-bit want that have does not
// hold is an error: it would round values in place.
func reorders(have, want layout) (steps [2]reorder, k int, err error) {
	switch {
	case have.holds(want):
		return steps, 0, nil
	case want.half.on():
		return steps, 0, fmt.Errorf("cuda: internal error: a tensor in %v read as %v would be rounded to %s in place", have, want, want.half)
	case have.half.on() && have.inFloat32().holds(want):
		steps[0] = reorder{from: have, to: have.inFloat32()}
		return steps, 1, nil
	}
	if have.nhwc {
		steps[k] = reorder{from: have, to: layout{}}
		k++
	}
	if want.nhwc {
		steps[k] = reorder{from: layout{}, to: want}
		k++
	}
	return steps, k, nil
}

func (l layout) String() string {
	switch {
	case !l.nhwc:
		return "flat"
	case l.half.on():
		return fmt.Sprintf("NHWC %s %d×%d×%d", l.half, l.n, l.c, l.s)
	}
	return fmt.Sprintf("NHWC %d×%d×%d", l.n, l.c, l.s)
}

// writePrep is what a tensor's elements need before an op writes the
// first need of them in layout lay, so that the elements past need keep
// their values in flat order afterwards: all of them reordered to flat
// float32, or only the samples of the tail (tail.from.n > 0) from element
// tailAt on, or nothing.
type writePrep struct {
	all    bool
	tail   reorder
	tailAt int
}

// prepareWrite says what a tensor in layout have needs before an op
// writes its first need elements in layout lay. Where have orders no more
// than need elements, the op overwrites all of them (in 16 bits, the first
// half of their bytes; the elements past need are float32 where they
// were): nothing. Where have holds lay over more samples (the op may read
// the tensor itself, in place, as lay), only the samples past lay's go
// back to flat float32, leaving those the op reads as they are; otherwise
// all of have's (no input of the op holds the tensor in an order it
// reads, or arrange would have put it in exactly that order).
func prepareWrite(have layout, need int, lay layout) writePrep {
	switch {
	case !have.nhwc || have.count() <= need:
		return writePrep{}
	case lay.nhwc && have.holds(lay):
		tail := have
		tail.n -= lay.n
		return writePrep{tail: reorder{from: tail, to: layout{}}, tailAt: lay.count()}
	}
	return writePrep{all: true}
}

// elementwiseLayout is the layout an elementwise op over n elements runs
// in, given its inputs' layouts: the first that is NHWC over exactly n
// elements, else flat. It is 16-bit only where the op has 16-bit kernels
// (halfOK) and every input holds it; otherwise its float32 twin.
func elementwiseLayout(n int, halfOK bool, inputs ...layout) layout {
	for _, l := range inputs {
		if !l.nhwc || l.count() != n {
			continue
		}
		if l.half.on() {
			for _, in := range inputs {
				halfOK = halfOK && in.holds(l)
			}
			if !halfOK {
				return l.inFloat32()
			}
		}
		return l
	}
	return layout{}
}

// activation is one activation argument of an op: the tensor's current
// layout and the op's n×c×s shape for it.
type activation struct {
	have    layout
	n, c, s int
}

// channelsLastFor says whether an op whose activation inputs are inputs
// runs in NHWC: where one of them already holds its shape in NHWC (in any
// storage type), or, where it has none, where prefer (channels-last is on) says
// so. An op over activations whose orders coincide (one channel or one
// position) runs flat.
func channelsLastFor(prefer bool, inputs ...activation) bool {
	for _, a := range inputs {
		if want := nhwcLayout(a.n, a.c, a.s); want.nhwc && a.have.inFloat32().holds(want) {
			return true
		}
	}
	return prefer && len(inputs) == 0
}

// halfFor says whether an op that has 16-bit kernels and runs in NHWC
// reads and writes its activations in format h (the backend's storage
// format, "" where it stores them as float32): where h is a 16-bit
// format and every activation input holds its shape in h's NHWC (or the
// op has none); never where an output's shape (outs, n×c×s each) is one
// NHWC stores flat, and so as float32.
func halfFor(h halfFormat, outs [][3]int, inputs ...activation) bool {
	if !h.on() {
		return false
	}
	for _, o := range outs {
		if !nhwcLayout(o[0], o[1], o[2]).nhwc {
			return false
		}
	}
	for _, a := range inputs {
		if want := nhwcLayout(a.n, a.c, a.s).inHalf(h); !want.nhwc || !a.have.holds(want) {
			return false
		}
	}
	return true
}

// packedPass returns the kernel and the thread count of an elementwise
// NHWC pass (batchnorm.cu, kernels prefix…) over cnt elements of c
// channels in layout lay: the prefix_vec_ kernel, a thread per pack of
// channels, where c is a multiple of the pack width (storage.cuh's
// VecWidth, 16 bytes of the storage type) and every activation pointer
// (ptrs) is aligned to a pack, as tensors' own buffers are (cuMemAlloc
// aligns them to 256 bytes); else a thread per element.
func packedPass(prefix string, lay layout, c, cnt int, ptrs ...uintptr) (string, int) {
	name, w := packedKernel(prefix, lay, c, ptrs...)
	return name, cnt / w
}

// packedKernel returns the kernel of an NHWC pass over c channels in
// layout lay that takes packs of channels where it can (as packedPass
// says), and the channels in a pack: 1 where it cannot.
func packedKernel(prefix string, lay layout, c int, ptrs ...uintptr) (string, int) {
	suffix := lay.half.kernelSuffix()
	aligned := true
	for _, p := range ptrs {
		aligned = aligned && p%16 == 0
	}
	if w := 16 / lay.elemBytes(); c%w == 0 && aligned {
		return prefix + "vec_" + suffix, w
	}
	return prefix + suffix, 1
}

// The block of the NHWC partial-sum kernels (batchnorm.cu's nhwc_partial):
// at most nhwcLanes lanes (a pack of channels each) by a power of two of
// rows, at most nhwcThreads threads in all.
const (
	nhwcLanes   = 32
	nhwcThreads = 256
)

// nhwcPartialBlock is the block shape of an NHWC partial-sum kernel over c
// channels in packs of w, lanes by rows, and how many such blocks span
// the channels (chunks).
func nhwcPartialBlock(c, w int) (lanes, rows, chunks int) {
	packs := max(1, c/w)
	lanes = min(nhwcLanes, packs)
	rows = 1
	for 2*rows*lanes <= nhwcThreads {
		rows *= 2
	}
	return lanes, rows, (packs + lanes - 1) / lanes
}

// packThreads is how many threads an elementwise pass over n values with
// the storage kernels of suffix ("f32", "bf16", "f16") needs: one per
// 16-byte pack of values (elementwise.cu's map2), the last pack's share
// rounded up.
func packThreads(n int, suffix string) int {
	w := 8
	if suffix == "f32" {
		w = 4
	}
	return (n + w - 1) / w
}
