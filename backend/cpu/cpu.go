// Package cpu owns the CPU implementation of backend.Backend: the executable
// specification every other backend is tested against. It is generic over
// the element type; float32 is what training uses, float64 is what gradient
// checks against finite differences use.
//
// Every op is deterministic: reductions run in a fixed order, and parallel
// work is split by output element, so the same inputs give the same bits
// whatever the number of threads. The kernels are picked once per backend
// by what the processor has (AVX-512, AVX2+FMA, or portable Go loops);
// different kernels round differently.
//
// Where things are: gemm.go, the packed float32 GEMM and its micro-kernel
// references; conv.go, convolutions (implicit GEMM for stride 1, phase
// splits for larger strides, im2col otherwise), pooling and shortcuts;
// filtergrad.go and direct.go, filter gradients; winograd.go, Winograd
// convolutions of 3×3 stride-1 layers (all three directions); vector.go,
// the SIMD loops of the memory-bound ops; bnrows.go, batch norm of feature
// vectors; pool.go, the workers; kernel*_amd64.s, winograd_amd64.s and
// vector_amd64.s, the assembly, each routine documented by the Go loop it
// must match.
package cpu

import (
	"errors"
	"fmt"
	"math"
	"runtime"

	"iterbin/backend"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// Float is the element type a CPU backend computes in.
type Float interface{ ~float32 | ~float64 }

// Backend is the CPU backend. It is not safe for concurrent use.
type Backend[T Float] struct {
	err error
	// asyncSlots are DownloadAsync's host slots, asyncCount how many
	// values each holds.
	asyncSlots [2][backend.MaxAsyncDownload]float32
	asyncCount [2]int
	blas       gonum.Implementation // float64 GEMM
	pool       *pool[T]
	// kernel is the float32 GEMM micro-kernel, kernelName says which.
	kernel     func(k int, a, b, c []float32, ldc int, add bool)
	kernelName string
	// packedW holds a convolution's prepacked weights during the op,
	// flippedW its flipped, transposed weights (backward data); phases
	// are the per-phase packed weights of a strided input gradient.
	packedW, flippedW []float32
	phases            []matrix
	// implicit is the micro-kernel of stride-1 convolutions, dot their
	// filter-gradient kernel, convName says which.
	implicit implicitKernel
	dot      dotKernel
	convName string
	// direct holds the channels-last filter-gradient kernel (direct.go),
	// nil where the processor lacks it.
	direct *directKernels
	// winograd holds the Winograd convolution's kernels (winograd.go,
	// AVX-512 or AVX2), nil where the processor lacks them; winogradU holds an op's
	// transformed filters.
	winograd  *winogradKernels
	winogradU []float32
	// winogradPartials holds a filter gradient's partial sums, one per
	// sample group.
	winogradPartials []float32
	// vec holds the SIMD loops of the memory-bound float32 ops.
	vec vectorOps
}

// tensor is the CPU backend's handle: a plain slice.
type tensor[T Float] struct {
	data  []T
	freed bool
}

func (t *tensor[T]) Len() int { return len(t.data) }

// New returns the float32 CPU backend used for training, with one worker
// per GOMAXPROCS and the fastest GEMM micro-kernel the processor runs.
func New() *Backend[float32] { return newBackend[float32](runtime.GOMAXPROCS(0), true, true) }

// NewWithOptions returns a float32 CPU backend with the given number of
// workers; simd = false forces the portable Go micro-kernel.
func NewWithOptions(workers int, simd bool) *Backend[float32] {
	return newBackend[float32](workers, simd, true)
}

// NewFloat64 returns a float64 CPU backend for numerical checks.
func NewFloat64() *Backend[float64] { return newBackend[float64](runtime.GOMAXPROCS(0), false, false) }

// implicitKernel is a micro-kernel of stride-1 convolutions: run computes
// a rows×nr tile like kernelOffsetsRowsGo, from weights packed in panels
// of rows.
type implicitKernel struct {
	rows int
	run  func(k int, a, b []float32, offs []int64, c []float32, ldc int, add bool)
	// twoRows, when set, is the variant for outputs nr/2 wide, like
	// kernelOffsets2RowsGo.
	twoRows func(k int, a, b []float32, offs []int64, gap int, c []float32, ldc int, add bool)
}

// dotKernel is a filter-gradient kernel: run does what dotGo does for its
// rows, cols and lanes.
type dotKernel struct {
	rows, cols, lanes int
	run               func(n int, dy []float32, ldy int, x []float32, offs []int64, acc []float32)
}

// newBackend picks the kernels: the portable loops, or with simd the
// AVX2+FMA assembly, and with avx512 too the AVX-512 convolution kernels
// where the processor has them.
func newBackend[T Float](workers int, simd, avx512 bool) *Backend[T] {
	b := &Backend[T]{pool: newPool[T](workers), kernel: kernelGo, kernelName: "portable Go", convName: "portable Go",
		implicit: implicitKernel{rows: mr, run: kernelOffsetsGo},
		dot: dotKernel{rows: 2, cols: 6, lanes: 8, run: func(n int, dy []float32, ldy int, x []float32, offs []int64, acc []float32) {
			dotGo(2, 6, 8, n, dy, ldy, x, offs, acc)
		}}}
	if simd {
		if k, name := simdKernel(); k != nil {
			b.kernel, b.kernelName = k, name
			b.implicit, b.dot, b.convName = simdConvKernels(avx512)
			if b.direct = simdDirectKernels(avx512); b.direct != nil {
				b.convName = "AVX-512 assembly (filter gradients: AVX-512 channels-last where the channels allow, else AVX2+FMA)"
			}
			if b.winograd = simdWinogradKernels(avx512); b.winograd != nil {
				b.convName += "; Winograd F(2×2,3×3) in " + b.winograd.name + " for 3×3 stride-1 layers of 16k channels"
			}
			b.vec = simdVectorOps()
		}
	}
	return b
}

var _ backend.Backend = (*Backend[float32])(nil)
var _ backend.FusedResidual = (*Backend[float32])(nil)
var _ backend.FusedResidual = (*Backend[float64])(nil)
var _ backend.Float64Host = (*Backend[float64])(nil)

// Name says which GEMM path is active and how many threads it uses.
func (b *Backend[T]) Name() string {
	var z T
	if _, ok := any(z).(float64); ok {
		return fmt.Sprintf("cpu float64 (gonum GEMM, %d threads)", b.pool.size())
	}
	return fmt.Sprintf("cpu float32 (GEMM micro-kernel: %s; convolution kernels: %s; %d threads)", b.kernelName, b.convName, b.pool.size())
}

func (b *Backend[T]) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// get returns the slice behind t, checking it belongs to this backend, is
// alive and holds at least need elements. On failure it records the error and
// returns nil; callers then return without touching memory.
func (b *Backend[T]) get(op, arg string, t backend.Tensor, need int) []T {
	ct, ok := t.(*tensor[T])
	if !ok || ct == nil {
		b.fail(fmt.Errorf("backend: %s: tensor %s is not a tensor of this backend (%T)", op, arg, t))
		return nil
	}
	if ct.freed {
		b.fail(fmt.Errorf("backend: %s: tensor %s was freed", op, arg))
		return nil
	}
	if need < 0 || len(ct.data) < need {
		b.fail(&backend.SizeError{Op: op, Arg: arg, Need: need, Have: len(ct.data)})
		return nil
	}
	return ct.data[:need]
}

// Alloc returns a zero-filled tensor of n elements.
func (b *Backend[T]) Alloc(n int) backend.Tensor {
	if n < 0 {
		b.fail(fmt.Errorf("backend: Alloc: negative size %d", n))
		n = 0
	}
	return &tensor[T]{data: make([]T, n)}
}

// Free releases t.
func (b *Backend[T]) Free(t backend.Tensor) {
	if ct, ok := t.(*tensor[T]); ok && ct != nil {
		ct.data = nil
		ct.freed = true
	}
}

// Upload copies src into the start of dst.
func (b *Backend[T]) Upload(dst backend.Tensor, src []float32) {
	d := b.get("Upload", "dst", dst, len(src))
	if d == nil {
		return
	}
	for i, v := range src {
		d[i] = T(v)
	}
}

// Download copies the first len(dst) values of src.
func (b *Backend[T]) Download(dst []float32, src backend.Tensor) {
	s := b.get("Download", "src", src, len(dst))
	if s == nil {
		return
	}
	for i, v := range s {
		dst[i] = float32(v)
	}
}

// Upload64 copies float64 values without rounding (float64 backend only
// keeps every bit).
func (b *Backend[T]) Upload64(dst backend.Tensor, src []float64) {
	d := b.get("Upload64", "dst", dst, len(src))
	if d == nil {
		return
	}
	for i, v := range src {
		d[i] = T(v)
	}
}

// Download64 copies values out as float64.
func (b *Backend[T]) Download64(dst []float64, src backend.Tensor) {
	s := b.get("Download64", "src", src, len(dst))
	if s == nil {
		return
	}
	for i, v := range s {
		dst[i] = float64(v)
	}
}

// Err returns the first recorded error.
func (b *Backend[T]) Err() error { return b.err }

// Sync returns the first recorded error; CPU ops are synchronous.
func (b *Backend[T]) Sync() error { return b.err }

// DownloadAsync copies src's first n values into host slot slot at once
// (CPU ops are synchronous); backend.AsyncDownloader.
func (b *Backend[T]) DownloadAsync(slot int, src backend.Tensor, n int) {
	if slot < 0 || slot >= len(b.asyncSlots) || n < 0 || n > backend.MaxAsyncDownload {
		b.fail(fmt.Errorf("backend: DownloadAsync: slot %d, %d values: use slot 0 or 1 and at most %d values", slot, n, backend.MaxAsyncDownload))
		return
	}
	s := b.get("DownloadAsync", "src", src, n)
	if s == nil {
		return
	}
	dst := b.asyncSlots[slot][:n]
	for i, v := range s[:n] {
		dst[i] = float32(v)
	}
	b.asyncCount[slot] = n
}

// WaitDownload copies slot's values into dst; backend.AsyncDownloader.
func (b *Backend[T]) WaitDownload(slot int, dst []float32) error {
	switch {
	case slot < 0 || slot >= len(b.asyncSlots):
		b.fail(fmt.Errorf("backend: WaitDownload: slot %d: use slot 0 or 1", slot))
		return b.err
	case len(dst) > b.asyncCount[slot]:
		b.fail(fmt.Errorf("backend: WaitDownload: slot %d holds %d values, %d asked for", slot, b.asyncCount[slot], len(dst)))
		return b.err
	}
	copy(dst, b.asyncSlots[slot][:len(dst)])
	return b.err
}

// Close stops the worker goroutines and reports the first recorded error;
// CPU memory belongs to Go.
func (b *Backend[T]) Close() error {
	b.pool.stop()
	return b.err
}

// Fill sets the first n elements to v.
func (b *Backend[T]) Fill(t backend.Tensor, v float32, n int) {
	d := b.get("Fill", "t", t, n)
	if d == nil {
		return
	}
	for i := range d {
		d[i] = T(v)
	}
}

// Copy copies n elements.
func (b *Backend[T]) Copy(dst, src backend.Tensor, n int) {
	d, s := b.get("Copy", "dst", dst, n), b.get("Copy", "src", src, n)
	if d == nil || s == nil {
		return
	}
	copy(d, s)
}

func transposeFlag(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// Gemm computes C = alpha·op(A)·op(B) + beta·C (row-major).
func (b *Backend[T]) Gemm(transA, transB bool, m, n, k int, alpha float32, at, bt backend.Tensor, beta float32, ct backend.Tensor) {
	a, bb, c := b.get("Gemm", "A", at, m*k), b.get("Gemm", "B", bt, k*n), b.get("Gemm", "C", ct, m*n)
	if a == nil || bb == nil || c == nil {
		return
	}
	if m == 0 || n == 0 {
		return
	}
	b.gemm(transA, transB, m, n, k, alpha, a, bb, beta, c)
}

// gemm is Gemm on slices with dense leading dimensions.
func (b *Backend[T]) gemm(transA, transB bool, m, n, k int, alpha float32, a, bb []T, beta float32, c []T) {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	if k == 0 {
		// BLAS leaves C untouched for k = 0 only when beta = 1; scale it.
		for i := range c[:m*n] {
			c[i] *= T(beta)
		}
		return
	}
	switch a := any(a).(type) {
	case []float32:
		b.sgemm(transA, transB, m, n, k, alpha, a, any(bb).([]float32), beta, any(c).([]float32))
	case []float64:
		b.blas.Dgemm(transposeFlag(transA), transposeFlag(transB), m, n, k, float64(alpha), a, lda, any(bb).([]float64), ldb, float64(beta), any(c).([]float64), n)
	}
}

// AddBias adds bias[c] to channel c of y (n×c×spatial).
func (b *Backend[T]) AddBias(yt, biast backend.Tensor, n, c, spatial int) {
	y, bias := b.get("AddBias", "y", yt, n*c*spatial), b.get("AddBias", "bias", biast, c)
	if y == nil || bias == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskAddBias, ew: elementTask[T]{a: y, b: bias}, planes: planeShape{n, c, spatial}}, n*c)
}

// addBiasPart adds the bias to planes [lo, hi) of y (plane p is channel
// p mod c).
func addBiasPart[T Float](v *vectorOps, y, bias []T, s planeShape, lo, hi int) {
	add, _ := any(v.addScalar).(func(y []T, b T))
	for p := lo; p < hi; p++ {
		bv := bias[p%s.c]
		row := y[p*s.spatial : (p+1)*s.spatial]
		if add != nil && len(row) >= vectorMin {
			add(row, bv)
			continue
		}
		for j := range row {
			row[j] += bv
		}
	}
}

// BiasGrad sets dBias[c] = Σ over samples and positions of dy.
func (b *Backend[T]) BiasGrad(dbt, dyt backend.Tensor, n, c, spatial int) {
	db, dy := b.get("BiasGrad", "dBias", dbt, c), b.get("BiasGrad", "dy", dyt, n*c*spatial)
	if db == nil || dy == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskBiasGrad, ew: elementTask[T]{a: db, b: dy}, planes: planeShape{n, c, spatial}}, c)
}

// biasGradPart sums channels [lo, hi), samples in order. Planes of at
// least vectorMin float32 values are summed by the SIMD loop in float64
// and rounded once; otherwise each plane is summed in T, in order.
func biasGradPart[T Float](v *vectorOps, db, dy []T, s planeShape, lo, hi int) {
	n, c, spatial := s.n, s.c, s.spatial
	dy32, simd := any(dy).([]float32)
	simd = simd && v.sum != nil && spatial >= vectorMin
	for ch := lo; ch < hi; ch++ {
		if simd {
			var sum float64
			for i := 0; i < n; i++ {
				sum += v.sum(dy32[(i*c+ch)*spatial:][:spatial])
			}
			db[ch] = T(sum)
			continue
		}
		var total T
		for i := 0; i < n; i++ {
			var sum T
			for _, x := range dy[(i*c+ch)*spatial:][:spatial] {
				sum += x
			}
			total += sum
		}
		db[ch] = total
	}
}

// ReLUForward sets y = max(x, 0).
func (b *Backend[T]) ReLUForward(yt, xt backend.Tensor, n int) {
	y, x := b.get("ReLUForward", "y", yt, n), b.get("ReLUForward", "x", xt, n)
	if y == nil || x == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskReLU, ew: elementTask[T]{a: y, b: x}}, blocks(n))
}

func reluPart[T Float](y, x []T) {
	for i, v := range x {
		if v > 0 {
			y[i] = v
		} else {
			y[i] = 0
		}
	}
}

// ReLUBackward sets dx = dy where y > 0.
func (b *Backend[T]) ReLUBackward(dxt, dyt, yt backend.Tensor, n int) {
	b.ternary("ReLUBackward", taskReLUBackward, [3]string{"dx", "dy", "y"}, [3]backend.Tensor{dxt, dyt, yt}, n)
}

func reluBackwardPart[T Float](dx, dy, y []T) {
	for i, v := range y {
		if v > 0 {
			dx[i] = dy[i]
		} else {
			dx[i] = 0
		}
	}
}

// BatchNormTrain normalizes with batch statistics and updates running ones.
func (b *Backend[T]) BatchNormTrain(yt, xhatt, meant, invStdt, runMeant, runVart, xt, gammat, betat backend.Tensor, s backend.BNShape, momentum, eps float32) {
	b.bnTrain("BatchNormTrain", false, nil, yt, xhatt, meant, invStdt, runMeant, runVart, xt, gammat, betat, s, momentum, eps)
}

// BatchNormReLUTrain is BatchNormTrain with ReLU applied to y in the same
// pass, keeping no xhat.
func (b *Backend[T]) BatchNormReLUTrain(yt, meant, invStdt, runMeant, runVart, xt, gammat, betat backend.Tensor, s backend.BNShape, momentum, eps float32) {
	b.bnTrain("BatchNormReLUTrain", true, nil, yt, nil, meant, invStdt, runMeant, runVart, xt, gammat, betat, s, momentum, eps)
}

// bnTrain runs a batch-norm training pass; with relu, y gets ReLU (after
// skip is added, when there is one) and xhatt is nil.
func (b *Backend[T]) bnTrain(op string, relu bool, skip []T, yt, xhatt, meant, invStdt, runMeant, runVart, xt, gammat, betat backend.Tensor, s backend.BNShape, momentum, eps float32) {
	cnt := s.Count()
	var xhat []T
	if !relu {
		if xhat = b.get(op, "xhat", xhatt, cnt); xhat == nil {
			return
		}
	}
	y, x := b.get(op, "y", yt, cnt), b.get(op, "x", xt, cnt)
	mean, invStd := b.get(op, "mean", meant, s.C), b.get(op, "invStd", invStdt, s.C)
	runMean, runVar := b.get(op, "runMean", runMeant, s.C), b.get(op, "runVar", runVart, s.C)
	gamma, beta := b.get(op, "gamma", gammat, s.C), b.get(op, "beta", betat, s.C)
	if y == nil || x == nil || mean == nil || invStd == nil || runMean == nil || runVar == nil || gamma == nil || beta == nil {
		return
	}
	if s.N*s.Spatial < 2 {
		b.fail(fmt.Errorf("backend: %s: batch norm in training needs more than one value per channel, got N=%d spatial=%d", op, s.N, s.Spatial))
		return
	}
	b.pool.run(b, task[T]{kind: taskBNTrain, bn: bnTask[T]{y: y, xhat: xhat, mean: mean, inv: invStd, runMean: runMean, runVar: runVar,
		x: x, gamma: gamma, beta: beta, s: s, momentum: momentum, eps: eps, relu: relu, skip: skip}}, s.C)
}

// bnTrainPart normalizes channels [lo, hi).
func bnTrainPart[T Float](t bnTask[T], lo, hi int, v *vectorOps) {
	if bnVector(v, t.s.Spatial, t.x) {
		bnTrainVector(any(t).(bnTask[float32]), lo, hi, v)
		return
	}
	if t.s.Spatial == 1 {
		bnTrainRows(t, lo, hi)
		return
	}
	bnTrainChannels(t, lo, hi)
}

// bnTrainChannels is bnTrainPart one channel at a time, the reference.
func bnTrainChannels[T Float](t bnTask[T], lo, hi int) {
	s, x, y, xhat, gamma, beta := t.s, t.x, t.y, t.xhat, t.gamma, t.beta
	mean, invStd, runMean, runVar, momentum, eps := t.mean, t.inv, t.runMean, t.runVar, t.momentum, t.eps
	m := float64(s.N * s.Spatial)
	for c := lo; c < hi; c++ {
		var sum float64
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			for _, v := range x[base : base+s.Spatial] {
				sum += float64(v)
			}
		}
		mu := sum / m
		var sq float64
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			for _, v := range x[base : base+s.Spatial] {
				d := float64(v) - mu
				sq += d * d
			}
		}
		variance := sq / m
		inv := T(1 / math.Sqrt(variance+float64(eps)))
		muT := T(mu)
		g, bt := gamma[c], beta[c]
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			for i := base; i < base+s.Spatial; i++ {
				h := (x[i] - muT) * inv
				if t.skip != nil {
					y[i] = relu(T(g*h) + bt + t.skip[i])
					continue
				}
				if t.relu {
					y[i] = relu(T(g*h) + bt)
					continue
				}
				xhat[i] = h
				y[i] = T(g*h) + bt
			}
		}
		mean[c] = muT
		invStd[c] = inv
		mom := T(momentum)
		runMean[c] = T((1-mom)*runMean[c]) + T(mom*muT)
		runVar[c] = T((1-mom)*runVar[c]) + T(mom*T(sq/(m-1)))
	}
}

// BatchNormEval normalizes with the running statistics.
func (b *Backend[T]) BatchNormEval(yt, xt, gammat, betat, runMeant, runVart backend.Tensor, s backend.BNShape, eps float32) {
	const op = "BatchNormEval"
	cnt := s.Count()
	y, x := b.get(op, "y", yt, cnt), b.get(op, "x", xt, cnt)
	gamma, beta := b.get(op, "gamma", gammat, s.C), b.get(op, "beta", betat, s.C)
	runMean, runVar := b.get(op, "runMean", runMeant, s.C), b.get(op, "runVar", runVart, s.C)
	if y == nil || x == nil || gamma == nil || beta == nil || runMean == nil || runVar == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskBNEval, bn: bnTask[T]{y: y, x: x, gamma: gamma, beta: beta, runMean: runMean, runVar: runVar, s: s, eps: eps}}, s.C)
}

// bnEvalPart normalizes channels [lo, hi) with the running statistics.
func bnEvalPart[T Float](t bnTask[T], lo, hi int) {
	s, x, y, gamma, beta, runMean, runVar, eps := t.s, t.x, t.y, t.gamma, t.beta, t.runMean, t.runVar, t.eps
	for c := lo; c < hi; c++ {
		inv := T(1 / math.Sqrt(float64(runVar[c])+float64(eps)))
		scale := gamma[c] * inv
		shift := beta[c] - runMean[c]*scale
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			for i := base; i < base+s.Spatial; i++ {
				y[i] = x[i]*scale + shift
			}
		}
	}
}

// BatchNormBackward computes dx, dGamma, dBeta.
func (b *Backend[T]) BatchNormBackward(dxt, dGammat, dBetat, dyt, xhatt, invStdt, gammat backend.Tensor, s backend.BNShape) {
	const op = "BatchNormBackward"
	cnt := s.Count()
	dx, dy, xhat := b.get(op, "dx", dxt, cnt), b.get(op, "dy", dyt, cnt), b.get(op, "xhat", xhatt, cnt)
	dGamma, dBeta := b.get(op, "dGamma", dGammat, s.C), b.get(op, "dBeta", dBetat, s.C)
	invStd, gamma := b.get(op, "invStd", invStdt, s.C), b.get(op, "gamma", gammat, s.C)
	if dx == nil || dy == nil || xhat == nil || dGamma == nil || dBeta == nil || invStd == nil || gamma == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskBNBackward, bn: bnTask[T]{y: dx, dGamma: dGamma, dBeta: dBeta, x: dy, xhat: xhat, inv: invStd, gamma: gamma, s: s}}, s.C)
}

// BatchNormReLUBackward is ReLUBackward then BatchNormBackward after
// BatchNormReLUTrain, recomputing xhat and the ReLU's mask from x.
func (b *Backend[T]) BatchNormReLUBackward(dxt, dGammat, dBetat, dyt, xt, meant, invStdt, gammat, betat backend.Tensor, s backend.BNShape) {
	const op = "BatchNormReLUBackward"
	cnt := s.Count()
	dx, dy, x := b.get(op, "dx", dxt, cnt), b.get(op, "dy", dyt, cnt), b.get(op, "x", xt, cnt)
	dGamma, dBeta := b.get(op, "dGamma", dGammat, s.C), b.get(op, "dBeta", dBetat, s.C)
	mean, invStd := b.get(op, "mean", meant, s.C), b.get(op, "invStd", invStdt, s.C)
	gamma, beta := b.get(op, "gamma", gammat, s.C), b.get(op, "beta", betat, s.C)
	if dx == nil || dy == nil || x == nil || dGamma == nil || dBeta == nil || mean == nil || invStd == nil || gamma == nil || beta == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskBNBackward, bn: bnTask[T]{y: dx, dGamma: dGamma, dBeta: dBeta, x: dy, mean: mean, inv: invStd,
		gamma: gamma, beta: beta, s: s, relu: true, input: x}}, s.C)
}

// BatchNormAddReLUTrain is BatchNormTrain of x followed by AddReLU with
// skip, keeping no xhat.
func (b *Backend[T]) BatchNormAddReLUTrain(yt, meant, invStdt, runMeant, runVart, xt, skipt, gammat, betat backend.Tensor, s backend.BNShape, momentum, eps float32) {
	skip := b.get("BatchNormAddReLUTrain", "skip", skipt, s.Count())
	if skip == nil {
		return
	}
	b.bnTrain("BatchNormAddReLUTrain", true, skip, yt, nil, meant, invStdt, runMeant, runVart, xt, gammat, betat, s, momentum, eps)
}

// BatchNormAddReLUBackward is ReLUBackward of dy through y into dSum, then
// BatchNormBackward of dSum with xhat recomputed from x.
func (b *Backend[T]) BatchNormAddReLUBackward(dxt, dGammat, dBetat, dSumt, dyt, yt, xt, meant, invStdt, gammat backend.Tensor, s backend.BNShape) {
	const op = "BatchNormAddReLUBackward"
	cnt := s.Count()
	dx, dSum, dy := b.get(op, "dx", dxt, cnt), b.get(op, "dSum", dSumt, cnt), b.get(op, "dy", dyt, cnt)
	y, x := b.get(op, "y", yt, cnt), b.get(op, "x", xt, cnt)
	dGamma, dBeta := b.get(op, "dGamma", dGammat, s.C), b.get(op, "dBeta", dBetat, s.C)
	mean, invStd, gamma := b.get(op, "mean", meant, s.C), b.get(op, "invStd", invStdt, s.C), b.get(op, "gamma", gammat, s.C)
	if dx == nil || dSum == nil || dy == nil || y == nil || x == nil || dGamma == nil || dBeta == nil || mean == nil || invStd == nil || gamma == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskBNBackward, bn: bnTask[T]{y: dx, dGamma: dGamma, dBeta: dBeta, x: dy, mean: mean, inv: invStd,
		gamma: gamma, s: s, input: x, out: y, dSum: dSum}}, s.C)
}

// bnBackwardPart computes the gradients of channels [lo, hi); y holds dx
// and x holds dy. After BatchNormReLUTrain (t.relu) it recomputes xhat
// from t.input and takes dy only where gamma·xhat + beta > 0.
func bnBackwardPart[T Float](t bnTask[T], lo, hi int, v *vectorOps) {
	if bnVector(v, t.s.Spatial, t.x) {
		bnBackwardVector(any(t).(bnTask[float32]), lo, hi, v)
		return
	}
	if t.s.Spatial == 1 {
		bnBackwardRows(t, lo, hi)
		return
	}
	bnBackwardChannels(t, lo, hi)
}

// bnBackwardChannels is bnBackwardPart one channel at a time, the
// reference.
func bnBackwardChannels[T Float](t bnTask[T], lo, hi int) {
	s, dx, dy, xhat, dGamma, dBeta, invStd, gamma := t.s, t.y, t.x, t.xhat, t.dGamma, t.dBeta, t.inv, t.gamma
	m := float64(s.N * s.Spatial)
	for c := lo; c < hi; c++ {
		// at returns xhat and dy at i, as the unfused ops see them.
		at := func(i int) (T, T) { return xhat[i], dy[i] }
		if t.relu {
			mu, inv, g, bt := t.mean[c], invStd[c], gamma[c], t.beta[c]
			at = func(i int) (T, T) {
				h := (t.input[i] - mu) * inv
				return h, masked(dy[i], T(g*h)+bt)
			}
		}
		if t.out != nil {
			mu, inv := t.mean[c], invStd[c]
			at = func(i int) (T, T) { return (t.input[i] - mu) * inv, masked(dy[i], t.out[i]) }
		}
		var sumDy, sumDyXhat float64
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			for i := base; i < base+s.Spatial; i++ {
				h, d := at(i)
				if t.dSum != nil {
					t.dSum[i] = d
				}
				sumDy += float64(d)
				sumDyXhat += float64(d) * float64(h)
			}
		}
		dBeta[c] = T(sumDy)
		dGamma[c] = T(sumDyXhat)
		// dx = gamma·invStd/m · (m·dy − Σdy − xhat·Σ(dy·xhat))
		k := gamma[c] * invStd[c] / T(m)
		sDy, sDyXhat := T(sumDy), T(sumDyXhat)
		for n := 0; n < s.N; n++ {
			base := (n*s.C + c) * s.Spatial
			for i := base; i < base+s.Spatial; i++ {
				h, d := at(i)
				dx[i] = k * (T(T(m)*d) - sDy - T(h*sDyXhat))
			}
		}
	}
}

// LogSoftmax sets each row of y to log-softmax of the row of x.
func (b *Backend[T]) LogSoftmax(yt, xt backend.Tensor, rows, cols int) {
	y, x := b.get("LogSoftmax", "y", yt, rows*cols), b.get("LogSoftmax", "x", xt, rows*cols)
	if y == nil || x == nil {
		return
	}
	for r := 0; r < rows; r++ {
		xr, yr := x[r*cols:(r+1)*cols], y[r*cols:(r+1)*cols]
		mx := xr[0]
		for _, v := range xr[1:] {
			if v > mx {
				mx = v
			}
		}
		var sum float64
		for _, v := range xr {
			sum += math.Exp(float64(v - mx))
		}
		lse := mx + T(math.Log(sum))
		for i, v := range xr {
			yr[i] = v - lse
		}
	}
}

func (b *Backend[T]) label(op string, v T, cols int) (int, bool) {
	l := int(v)
	if T(l) != v || l < 0 || l >= cols {
		b.fail(fmt.Errorf("backend: %s: label %v is not a class index in [0, %d)", op, float64(v), cols))
		return 0, false
	}
	return l, true
}

// NLLLoss accumulates the summed loss and the number of correct arg-maxes.
func (b *Backend[T]) NLLLoss(sumst, logpt, labelst backend.Tensor, rows, cols int) {
	sums, logp, labels := b.get("NLLLoss", "sums", sumst, 3), b.get("NLLLoss", "logp", logpt, rows*cols), b.get("NLLLoss", "labels", labelst, rows)
	if sums == nil || logp == nil || labels == nil {
		return
	}
	var loss float64
	correct, top5 := 0, 0
	for r := 0; r < rows; r++ {
		l, ok := b.label("NLLLoss", labels[r], cols)
		if !ok {
			return
		}
		row := logp[r*cols : (r+1)*cols]
		loss -= float64(row[l])
		best := 0
		for i, v := range row {
			if v > row[best] {
				best = i
			}
		}
		if best == l {
			correct++
		}
		higher := 0
		for _, v := range row {
			if v > row[l] {
				higher++
			}
		}
		if higher < 5 {
			top5++
		}
	}
	sums[0] += T(loss)
	sums[1] += T(correct)
	sums[2] += T(top5)
}

// LogSoftmaxNLLBackward sets dx = scale·(softmax − onehot).
func (b *Backend[T]) LogSoftmaxNLLBackward(dxt, logpt, labelst backend.Tensor, rows, cols int, scale float32) {
	const op = "LogSoftmaxNLLBackward"
	dx, logp, labels := b.get(op, "dx", dxt, rows*cols), b.get(op, "logp", logpt, rows*cols), b.get(op, "labels", labelst, rows)
	if dx == nil || logp == nil || labels == nil {
		return
	}
	s := T(scale)
	for r := 0; r < rows; r++ {
		l, ok := b.label(op, labels[r], cols)
		if !ok {
			return
		}
		for i := r * cols; i < (r+1)*cols; i++ {
			dx[i] = s * T(math.Exp(float64(logp[i])))
		}
		dx[r*cols+l] -= s
	}
}

// Sign sets dst = sign(src), sign(0) = +1, shared between the workers.
func (b *Backend[T]) Sign(dstt, srct backend.Tensor, n int) {
	dst, src := b.get("Sign", "dst", dstt, n), b.get("Sign", "src", srct, n)
	if dst == nil || src == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskSign, ew: elementTask[T]{a: dst, b: src}}, blocks(n))
}

// signPart computes the sign without branches on the value: random signs
// would mispredict half the branches.
func signPart[T Float](dst, src []T) {
	if d, ok := any(dst).([]float32); ok {
		s := any(src).([]float32)
		for i, v := range s {
			u := math.Float32bits(v)
			neg := u & 0x80000000
			if u<<1 == 0 { // ±0 → +1
				neg = 0
			}
			d[i] = math.Float32frombits(0x3f800000 | neg)
		}
		return
	}
	for i, v := range src {
		if v < 0 {
			dst[i] = -1
		} else {
			dst[i] = 1
		}
	}
}

// SignScaled sets each row of dst to mean(|row|)·sign(row).
func (b *Backend[T]) SignScaled(dstt, srct backend.Tensor, rows, cols int) {
	dst, src := b.get("SignScaled", "dst", dstt, rows*cols), b.get("SignScaled", "src", srct, rows*cols)
	if dst == nil || src == nil {
		return
	}
	for r := 0; r < rows; r++ {
		row := src[r*cols : (r+1)*cols]
		var sum float64
		for _, v := range row {
			sum += math.Abs(float64(v))
		}
		scale := T(sum / float64(cols))
		out := dst[r*cols : (r+1)*cols]
		for i, v := range row {
			if v < 0 {
				out[i] = -scale
			} else {
				out[i] = scale
			}
		}
	}
}

// STEClippedMask zeroes grad where |latent| > 1.
func (b *Backend[T]) STEClippedMask(gradt, latentt backend.Tensor, n int) {
	g, w := b.get("STEClippedMask", "grad", gradt, n), b.get("STEClippedMask", "latent", latentt, n)
	if g == nil || w == nil {
		return
	}
	for i, v := range w {
		if v > 1 || v < -1 {
			g[i] = 0
		}
	}
}

// Clip limits t to [lo, hi].
func (b *Backend[T]) Clip(tt backend.Tensor, lo, hi float32, n int) {
	t := b.get("Clip", "t", tt, n)
	if t == nil {
		return
	}
	l, h := T(lo), T(hi)
	for i, v := range t {
		t[i] = min(max(v, l), h)
	}
}

// AdamStep performs one PyTorch-style Adam update, shared between the
// workers.
func (b *Backend[T]) AdamStep(wt, gt, mt, vt backend.Tensor, n int, p backend.AdamParams) {
	w, g, m, v := b.get("AdamStep", "w", wt, n), b.get("AdamStep", "g", gt, n), b.get("AdamStep", "m", mt, n), b.get("AdamStep", "v", vt, n)
	if w == nil || g == nil || m == nil || v == nil {
		return
	}
	if p.Step < 1 {
		b.fail(errors.New("backend: AdamStep: step must be at least 1"))
		return
	}
	b.pool.run(b, task[T]{kind: taskAdam, ew: elementTask[T]{a: w, b: g, c: m, d: v, adam: p}}, blocks(n))
}

func adamPart[T Float](w, g, m, v []T, p backend.AdamParams, vec *vectorOps) {
	bc1 := 1 - math.Pow(float64(p.Beta1), float64(p.Step))
	bc2 := 1 - math.Pow(float64(p.Beta2), float64(p.Step))
	k := adamConsts[T]{b1: T(p.Beta1), c1: 1 - T(p.Beta1), b2: T(p.Beta2), c2: 1 - T(p.Beta2),
		bc2Sqrt: T(math.Sqrt(bc2)), eps: T(p.Eps), stepSize: T(float64(p.LR) / bc1), wd: T(p.WeightDecay)}
	if f, ok := any(vec.adam).(func(w, g, m, v []T, p adamConsts[T])); ok && f != nil {
		f(w, g, m, v, k)
		return
	}
	adamLoop(w, g, m, v, k)
}

// adamConsts are the float32 (or float64) constants of one Adam update.
type adamConsts[T Float] struct{ b1, c1, b2, c2, bc2Sqrt, eps, stepSize, wd T }

// adamLoop is the Adam update, the reference for the SIMD loop.
func adamLoop[T Float](w, g, m, v []T, k adamConsts[T]) {
	for i := range w {
		gi := g[i]
		if k.wd != 0 {
			gi += T(k.wd * w[i])
		}
		m[i] = T(k.b1*m[i]) + T(k.c1*gi)
		v[i] = T(k.b2*v[i]) + T(T(k.c2*gi)*gi)
		denom := T(math.Sqrt(float64(v[i])))/k.bc2Sqrt + k.eps
		w[i] -= k.stepSize * m[i] / denom
	}
}

// SGDStep performs one PyTorch-style SGD update, shared between the
// workers.
func (b *Backend[T]) SGDStep(wt, gt, buft backend.Tensor, n int, p backend.SGDParams) {
	w, g, buf := b.get("SGDStep", "w", wt, n), b.get("SGDStep", "g", gt, n), b.get("SGDStep", "buf", buft, n)
	if w == nil || g == nil || buf == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskSGD, ew: elementTask[T]{a: w, b: g, c: buf, sgd: p}}, blocks(n))
}

func sgdPart[T Float](w, g, buf []T, p backend.SGDParams) {
	lr, mom, wd := T(p.LR), T(p.Momentum), T(p.WeightDecay)
	for i := range w {
		gi := g[i]
		if wd != 0 {
			gi += T(wd * w[i])
		}
		if mom != 0 {
			buf[i] = T(mom*buf[i]) + gi
			if p.Nesterov {
				gi += T(mom * buf[i])
			} else {
				gi = buf[i]
			}
		}
		w[i] -= T(lr * gi)
	}
}
