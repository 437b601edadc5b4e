package cpu

import (
	"runtime"
	"sync/atomic"

	"iterbin/backend"
)

// The worker pool runs the parallel parts of GEMMs and convolutions. Its
// goroutines start on the first parallel op and stop at Close; tasks are
// plain values sent over per-worker channels, so dispatching allocates
// nothing. Each worker owns its scratch buffers.

type taskKind int

const (
	taskGemm taskKind = iota
	taskConvForward
	taskConvBackwardData
	taskConvBackwardFilter
	taskDirectFilter
	taskSign
	taskAdam
	taskSGD
	taskReLU
	taskReLUBackward
	taskAdd
	taskAddReLU
	taskShortcutForward
	taskMaxPoolForward
	taskMaxPoolBackward
	taskBiasGrad
	taskAddBias
	taskShortcutBackward
	taskBNTrain
	taskBNEval
	taskBNBackward
	taskWinogradFilters
	taskWinogradFilterGrad
	taskWinogradFilterFinish
)

// bnTask carries a batch-norm op's tensors; channels are the units.
type bnTask[T Float] struct {
	y, xhat, mean, inv, runMean, runVar, x, gamma, beta, dGamma, dBeta []T
	s                                                                  backend.BNShape
	momentum, eps                                                      float32
	// relu fuses a following ReLU: in training (BatchNormReLUTrain) y
	// gets ReLU and no xhat is kept; in backward (BatchNormReLUBackward)
	// xhat and the ReLU's mask are recomputed from input, mean, inv, gamma
	// and beta.
	relu  bool
	input []T
	// skip, in training with relu (BatchNormAddReLUTrain), is added
	// before the ReLU. out, in backward (BatchNormAddReLUBackward), is
	// the output of that op: dy is taken where out > 0 and written to
	// dSum, and xhat is recomputed from input.
	skip, out, dSum []T
}

// elementBlock is the number of elements in one unit of an elementwise
// task; small tensors stay on the calling worker.
const elementBlock = 1 << 14

func blocks(n int) int { return (n + elementBlock - 1) / elementBlock }

// elementTask describes an elementwise op over slices a, b, c, d.
type elementTask[T Float] struct {
	a, b, c, d []T
	adam       backend.AdamParams
	sgd        backend.SGDParams
}

// part returns units [lo, hi) of s.
func part[T Float](s []T, lo, hi int) []T {
	if s == nil {
		return nil
	}
	return s[min(lo*elementBlock, len(s)):min(hi*elementBlock, len(s))]
}

// task is one share of a parallel op: units [lo, hi) of it.
type task[T Float] struct {
	kind   taskKind
	lo, hi int
	gm     gemmTask
	cv     convTask[T]
	ew     elementTask[T]
	bn     bnTask[T]
	sc     backend.ShortcutShape
	pool   backend.PoolShape
	planes planeShape
	wf     winogradFilterTask
}

// winogradFilterTask describes a Winograd filter transform (see
// winogradFilters); input channels are the units.
type winogradFilterTask struct {
	w         []float32
	cin, cout int
	flip      bool
}

// planeShape is n samples of c channel planes of spatial values each.
type planeShape struct{ n, c, spatial int }

// convTask describes a convolution op; out, in and w are its three tensors
// in the op's argument order.
type convTask[T Float] struct {
	s          backend.ConvShape
	out, in, w []T
	// packedW is the float32 weights (or their transpose) prepacked for
	// every sample's GEMM.
	packedW matrix
	// phased says a strided input gradient runs on phases, with the
	// weights in the backend's phases.
	phased bool
	// add says an input gradient is added to out (Conv2DBackwardDataAdd).
	add bool
	// winograd says the op runs on the Winograd path, with the filters
	// transformed in the backend's winogradU.
	winograd bool
}

// workerScratch is one worker's memory: GEMM packing buffers and im2col
// columns, grown to the largest need and then reused.
type workerScratch[T Float] struct {
	gemm *gemmScratch
	cols []T
	// pad and offs serve implicit (stride-1) convolutions: a zero-padded
	// sample and the offsets of the weights' rows in it.
	pad  []float32
	offs []int64
	// f32a and f32b are float32 work matrices of implicit filter
	// gradients.
	f32a, f32b []float32
	sample     []T
	// implicitPad and implicitOffs are implicitConv's padded sample and
	// its column offsets, for the geometry implicit (see padded).
	implicitPad  []float32
	implicitOffs []int64
	implicit     implicitPadding
	// winogradPad is the Winograd paths' channels-last padded sample, for
	// the geometry winogradGeom (see winogradPadded); winogradV, winogradM
	// and winogradY hold a chunk's transformed tiles, products and output
	// (or output-gradient) rows.
	winogradPad                     []float32
	winogradGeom                    winogradPadding
	winogradV, winogradM, winogradY []float32
}

func (s *workerScratch[T]) matrixBuf(n int) []float32 {
	if cap(s.f32a) < n {
		s.f32a = make([]float32, n)
	}
	return s.f32a[:n]
}

func (s *workerScratch[T]) columnsF32(n int) []float32 {
	if cap(s.f32b) < n {
		s.f32b = make([]float32, n)
	}
	return s.f32b[:n]
}

// sampleBuf holds one sample's result before it is added into a tensor.
func (s *workerScratch[T]) sampleBuf(n int) []T {
	if cap(s.sample) < n {
		s.sample = make([]T, n)
	}
	return s.sample[:n]
}

func (s *workerScratch[T]) columns(n int) []T {
	if cap(s.cols) < n {
		s.cols = make([]T, n)
	}
	return s.cols[:n]
}

type pool[T Float] struct {
	workers   int
	chans     []chan task[T]
	scratches []*workerScratch[T]
	// pending counts the shares of the running op not yet finished by
	// the other workers; the last one to finish signals done.
	pending atomic.Int32
	done    chan struct{}
}

// spinChecks is how many times a worker waiting for a task, or the caller
// waiting for the workers, checks before it blocks (about 100 µs, yielding
// to other goroutines every 64 checks). Ops follow each other within
// microseconds during a step; blocking between them would leave the other
// core asleep and cost a wake-up per op.
const spinChecks = 4096

func newPool[T Float](workers int) *pool[T] {
	p := &pool[T]{workers: max(workers, 1), done: make(chan struct{}, 1)}
	p.scratches = make([]*workerScratch[T], p.workers)
	for i := range p.scratches {
		p.scratches[i] = &workerScratch[T]{}
	}
	return p
}

func (p *pool[T]) size() int { return p.workers }

// scratch returns worker i's scratch; only worker i (0 is the caller) may
// use it.
func (p *pool[T]) scratch(i int) *workerScratch[T] {
	s := p.scratches[i]
	if s.gemm == nil {
		var z T
		if _, ok := any(z).(float32); ok {
			s.gemm = newGemmScratch()
		}
	}
	return s
}

func (p *pool[T]) start(b *Backend[T]) {
	if p.chans != nil {
		return
	}
	p.chans = make([]chan task[T], p.workers)
	for i := 1; i < p.workers; i++ {
		ch := make(chan task[T], 1)
		p.chans[i] = ch
		go func(i int) {
			for {
				t, ok := receive(ch)
				if !ok {
					return
				}
				b.exec(p.scratch(i), t)
				if p.pending.Add(-1) == 0 {
					select {
					case p.done <- struct{}{}:
					default: // a token is already there
					}
				}
			}
		}(i)
	}
}

// run splits units of work into contiguous shares, one per worker; the
// caller runs the first share and waits for the others.
func (p *pool[T]) run(b *Backend[T], t task[T], units int) {
	w := min(p.workers, units)
	if w <= 1 {
		t.lo, t.hi = 0, units
		b.exec(p.scratch(0), t)
		return
	}
	p.start(b)
	per := (units + w - 1) / w
	for i := 1; i < w; i++ {
		ti := t
		ti.lo, ti.hi = i*per, min((i+1)*per, units)
		if ti.lo >= ti.hi {
			continue
		}
		p.pending.Add(1)
		p.chans[i] <- ti
	}
	t.lo, t.hi = 0, min(per, units)
	b.exec(p.scratch(0), t)
	p.wait()
}

// receive takes a worker's next task, spinning briefly before it blocks;
// ok is false once the pool stops.
func receive[T Float](ch chan task[T]) (t task[T], ok bool) {
	for i := 0; i < spinChecks; i++ {
		select {
		case t, ok = <-ch:
			return t, ok
		default:
		}
		if i%64 == 63 {
			runtime.Gosched()
		}
	}
	t, ok = <-ch
	return t, ok
}

// wait returns when every share handed to the other workers is finished,
// spinning briefly before it blocks. A token left in done by a finish the
// spin already saw only makes a later wait check once more.
func (p *pool[T]) wait() {
	for i := 0; p.pending.Load() != 0; i++ {
		if i < spinChecks {
			if i%64 == 63 {
				runtime.Gosched()
			}
			continue
		}
		<-p.done
	}
}

// stop ends the worker goroutines.
func (p *pool[T]) stop() {
	for _, ch := range p.chans {
		if ch != nil {
			close(ch)
		}
	}
	p.chans = nil
}

func (b *Backend[T]) exec(s *workerScratch[T], t task[T]) {
	switch t.kind {
	case taskGemm:
		b.runGemmPart(s, t.gm, t.lo, t.hi)
	case taskConvForward:
		b.convForwardPart(s, t.cv, t.lo, t.hi)
	case taskConvBackwardData:
		b.convBackwardDataPart(s, t.cv, t.lo, t.hi)
	case taskConvBackwardFilter:
		b.convBackwardFilterPart(s, t.cv, t.lo, t.hi)
	case taskWinogradFilters:
		winogradFilters(b.winogradU, t.wf.w, t.wf.cin, t.wf.cout, t.wf.flip, t.lo, t.hi)
	case taskWinogradFilterGrad:
		b.winogradFilterPart(s, any(t.cv).(convTask[float32]), t.lo, t.hi)
	case taskWinogradFilterFinish:
		b.winogradFilterFinish(s, any(t.cv).(convTask[float32]), t.lo, t.hi)
	case taskDirectFilter:
		b.directFilterPart(s, any(t.cv).(convTask[float32]), t.lo, t.hi)
	case taskSign:
		signPart(part(t.ew.a, t.lo, t.hi), part(t.ew.b, t.lo, t.hi))
	case taskAdam:
		e := t.ew
		adamPart(part(e.a, t.lo, t.hi), part(e.b, t.lo, t.hi), part(e.c, t.lo, t.hi), part(e.d, t.lo, t.hi), e.adam, &b.vec)
	case taskSGD:
		e := t.ew
		sgdPart(part(e.a, t.lo, t.hi), part(e.b, t.lo, t.hi), part(e.c, t.lo, t.hi), e.sgd)
	case taskReLU:
		y, x := part(t.ew.a, t.lo, t.hi), part(t.ew.b, t.lo, t.hi)
		if y32, ok := any(y).([]float32); ok && b.vec.relu != nil {
			b.vec.relu(y32, any(x).([]float32))
			return
		}
		reluPart(y, x)
	case taskReLUBackward:
		ternaryPart(t, b.vec.reluBackward, reluBackwardPart[T])
	case taskAdd:
		ternaryPart(t, b.vec.add, addPart[T])
	case taskMaxPoolForward:
		maxPoolForwardPart(&b.vec, t.ew.a, t.ew.b, t.ew.c, t.pool, t.lo, t.hi)
	case taskMaxPoolBackward:
		maxPoolBackwardPart(t.ew.a, t.ew.b, t.ew.c, t.pool, t.lo, t.hi)
	case taskBiasGrad:
		biasGradPart(&b.vec, t.ew.a, t.ew.b, t.planes, t.lo, t.hi)
	case taskAddBias:
		addBiasPart(&b.vec, t.ew.a, t.ew.b, t.planes, t.lo, t.hi)
	case taskShortcutForward:
		shortcutForwardPart(s, &b.vec, t.ew.a, t.ew.b, t.sc, t.lo, t.hi)
	case taskShortcutBackward:
		shortcutBackwardPart(s, &b.vec, t.ew.a, t.ew.b, t.sc, t.lo, t.hi)
	case taskAddReLU:
		ternaryPart(t, b.vec.addReLU, addReLUPart[T])
	case taskBNTrain:
		bnTrainPart(t.bn, t.lo, t.hi, &b.vec)
	case taskBNEval:
		bnEvalPart(t.bn, t.lo, t.hi)
	case taskBNBackward:
		bnBackwardPart(t.bn, t.lo, t.hi, &b.vec)
	}
}

// gemmStrided runs C = op(A)·op(B) + beta·C on the calling worker with
// explicit leading dimensions (C may be a block of a wider matrix).
func (b *Backend[T]) gemmStrided(s *workerScratch[T], transA, transB bool, m, n, k int, a []T, lda int, bb []T, ldb int, beta float32, c []T, ldc int) {
	switch a := any(a).(type) {
	case []float32:
		b.sgemmSerial(s.gemm, matrix{data: a, ld: lda, trans: transA}, matrix{data: any(bb).([]float32), ld: ldb, trans: transB}, k, 1, beta, any(c).([]float32), ldc, 0, m, 0, n)
	case []float64:
		b.blas.Dgemm(transposeFlag(transA), transposeFlag(transB), m, n, k, 1, a, lda, any(bb).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	}
}

// gemmPrepacked runs C = A·op(B) + beta·C on the calling worker with a
// prepacked float32 A (m×k), B dense (k×n, or n×k when transB).
func (b *Backend[T]) gemmPrepacked(s *workerScratch[T], a matrix, transB bool, m, n, k int, bb []T, beta float32, c []T) {
	ldb := n
	if transB {
		ldb = k
	}
	b.sgemmSerial(s.gemm, a, matrix{data: any(bb).([]float32), ld: ldb, trans: transB}, k, 1, beta, any(c).([]float32), n, 0, m, 0, n)
}

// gemmOne runs a GEMM on the calling worker only.
func (b *Backend[T]) gemmOne(s *workerScratch[T], transA, transB bool, m, n, k int, alpha float32, a, bb []T, beta float32, c []T) {
	switch a := any(a).(type) {
	case []float32:
		lda, ldb := k, n
		if transA {
			lda = m
		}
		if transB {
			ldb = k
		}
		b.sgemmSerial(s.gemm, matrix{data: a, ld: lda, trans: transA}, matrix{data: any(bb).([]float32), ld: ldb, trans: transB}, k, alpha, beta, any(c).([]float32), n, 0, m, 0, n)
	default:
		b.gemm(transA, transB, m, n, k, alpha, any(a).([]T), bb, beta, c)
	}
}

// ternaryPart runs units [lo, hi) of an elementwise op on the task's
// slices a, b, c: the SIMD loop where there is one for float32, else the
// generic one.
func ternaryPart[T Float](t task[T], simd func(a, b, c []float32), generic func(a, b, c []T)) {
	a, b, c := part(t.ew.a, t.lo, t.hi), part(t.ew.b, t.lo, t.hi), part(t.ew.c, t.lo, t.hi)
	if a32, ok := any(a).([]float32); ok && simd != nil {
		simd(a32, any(b).([]float32), any(c).([]float32))
		return
	}
	generic(a, b, c)
}
