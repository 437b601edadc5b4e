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

// layout says in which order the first elements of a device buffer are
// stored. The zero value is flat, the order of the Backend interface.
type layout struct {
	// nhwc: the first n·c·s elements are an n×c×s activation (n samples,
	// c channels, s positions) stored n×s×c, element (i, ch, j) at
	// (i·s + j)·c + ch.
	nhwc    bool
	n, c, s int
}

// nhwcLayout is the channels-last layout of an n×c×s activation; where
// its two orders coincide (one channel or one position) it is flat.
func nhwcLayout(n, c, s int) layout {
	if c == 1 || s == 1 || n*c*s == 0 {
		return layout{}
	}
	return layout{nhwc: true, n: n, c: c, s: s}
}

// count is the number of elements the layout orders; 0 for flat.
func (l layout) count() int {
	if !l.nhwc {
		return 0
	}
	return l.n * l.c * l.s
}

// holds says whether a tensor in layout l stores the first elements in
// layout want: l's channels and positions and at least want's samples
// (a smaller batch of the same activation is a prefix of it).
func (l layout) holds(want layout) bool {
	if !want.nhwc {
		return !l.nhwc
	}
	return l.nhwc && l.c == want.c && l.s == want.s && l.n >= want.n
}

// transpose is one in-place reordering of a tensor's first n·c·s
// elements: flat to NHWC (toNHWC) or NHWC to flat.
type transpose struct {
	toNHWC  bool
	n, c, s int
}

// transposes lists the reorderings, in order, that take a tensor from
// layout have to layout want (the first k of steps): none where have
// holds want; otherwise have's NHWC elements back to flat, then on to
// want's NHWC.
func transposes(have, want layout) (steps [2]transpose, k int) {
	if have.holds(want) {
		return steps, 0
	}
	if have.nhwc {
		steps[k] = transpose{toNHWC: false, n: have.n, c: have.c, s: have.s}
		k++
	}
	if want.nhwc {
		steps[k] = transpose{toNHWC: true, n: want.n, c: want.c, s: want.s}
		k++
	}
	return steps, k
}

// writePrep is what a tensor's elements need before an op writes the
// first need of them in layout lay, so that the elements past need keep
// their values in flat order afterwards: all of them transposed back to
// flat, or only the samples of the tail (tail.n > 0) at element tailAt,
// or nothing.
type writePrep struct {
	all    bool
	tail   transpose
	tailAt int
}

// prepareWrite says what a tensor in layout have needs before an op
// writes its first need elements in layout lay. Where have orders no more
// than need elements, the op overwrites all of them: nothing. Where have
// holds lay over more samples (the op may read the tensor itself, in
// place, as lay), only the samples past lay's go back to flat, leaving
// those the op reads as they are; otherwise all of have's (no input of
// the op holds the tensor in an order it reads, or arrange would have put
// it in exactly that order).
func prepareWrite(have layout, need int, lay layout) writePrep {
	switch {
	case !have.nhwc || have.count() <= need:
		return writePrep{}
	case lay.nhwc && have.holds(lay):
		return writePrep{tail: transpose{toNHWC: false, n: have.n - lay.n, c: have.c, s: have.s}, tailAt: lay.count()}
	}
	return writePrep{all: true}
}

// elementwiseLayout is the layout an elementwise op over n elements runs
// in, given its inputs' layouts: the first that is NHWC over exactly n
// elements, else flat.
func elementwiseLayout(n int, inputs ...layout) layout {
	for _, l := range inputs {
		if l.nhwc && l.count() == n {
			return l
		}
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
// runs in NHWC: where one of them already holds its shape in NHWC, or,
// where it has none, where prefer (channels-last is on) says so. An op
// over activations whose orders coincide (one channel or one position)
// runs flat.
func channelsLastFor(prefer bool, inputs ...activation) bool {
	for _, a := range inputs {
		if want := nhwcLayout(a.n, a.c, a.s); want.nhwc && a.have.holds(want) {
			return true
		}
	}
	return prefer && len(inputs) == 0
}
