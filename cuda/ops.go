//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"math"

	"gorgonia.org/cu"

	"iterbin/backend"
)

// maxWorkspaceFloats bounds the im2col workspace (1 GiB); convolutions
// process as many samples at a time as fit.
const maxWorkspaceFloats = 1 << 28

func off(p cu.DevicePtr, elems int) cu.DevicePtr { return p + cu.DevicePtr(4*elems) }

// Fill sets the first n elements to v.
func (b *Backend) Fill(t backend.Tensor, v float32, n int) {
	d := b.output("Fill", "t", t, n, layout{})
	if d == 0 || n == 0 {
		return
	}
	if v == 0 {
		if err := cu.MemsetD32Async(d, 0, int64(n), b.stream); err != nil {
			b.fail(fmt.Errorf("cuda: cuMemsetD32Async: %v", err))
		}
		return
	}
	b.launchN("fill_f32", n, ptrArg(d), floatArg(v), intArg(n))
}

// Copy copies n elements on the device.
func (b *Backend) Copy(dst, src backend.Tensor, n int) {
	p, suffix, ok := b.elementwiseStored("Copy", n, written("dst", dst), read("src", src))
	d, s := p[0], p[1]
	if !ok || d == 0 || s == 0 || n == 0 {
		return
	}
	bytes := 4 * n
	if suffix != "f32" {
		bytes = 2 * n
	}
	if err := cu.MemcpyDtoDAsync(d, s, int64(bytes), b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuMemcpyDtoDAsync: %v", err))
	}
}

// Gemm runs cuBLAS SGEMM, or at precision bf16 or fp16 a GemmEx on 16-bit
// copies of A and B (half.go).
func (b *Backend) Gemm(transA, transB bool, m, n, k int, alpha float32, at, bt backend.Tensor, beta float32, ct backend.Tensor) {
	a, bb := b.dev("Gemm", "A", at, m*k), b.dev("Gemm", "B", bt, k*n)
	var c cu.DevicePtr
	if beta != 0 {
		c = b.dev("Gemm", "C", ct, m*n)
	} else {
		c = b.output("Gemm", "C", ct, m*n, layout{})
	}
	if a == 0 || bb == 0 || c == 0 || m == 0 || n == 0 || b.err != nil {
		return
	}
	if k == 0 {
		b.fail(errors.New("cuda: Gemm with k = 0 is not supported"))
		return
	}
	if b.half.on() {
		b.gemmHalf(transA, transB, m, n, k, alpha, a, bb, beta, c)
		return
	}
	b.fail(b.blas.gemm(transA, transB, m, n, k, alpha, uintptr(a), uintptr(bb), beta, uintptr(c)))
}

// AddBias adds bias[c] to channel c.
// In NHWC (layout.go) it is the same kernel over n·spatial rows of c.
func (b *Backend) AddBias(yt, biast backend.Tensor, n, c, spatial int) {
	ya, bias := b.tensorArg("AddBias", "y", yt, n*c*spatial), b.dev("AddBias", "bias", biast, c)
	if ya == nil || bias == 0 {
		return
	}
	lay := b.activationLayout(false, n, c, spatial, activation{ya.lay, n, c, spatial})
	y := b.arrange(ya, lay)
	if y == 0 {
		return
	}
	if lay.nhwc {
		n, spatial = n*spatial, 1
	}
	b.launchN("bias_add_f32", n*c*spatial, ptrArg(y), ptrArg(bias), intArg(n), intArg(c), intArg(spatial))
}

// BiasGrad sums dy per channel.
// In NHWC it takes batch norm's partial sums (in double) instead.
func (b *Backend) BiasGrad(dbt, dyt backend.Tensor, n, c, spatial int) {
	dya := b.tensorArg("BiasGrad", "dy", dyt, n*c*spatial)
	db := b.output("BiasGrad", "dBias", dbt, c, layout{})
	if db == 0 || dya == nil {
		return
	}
	lay := b.activationLayout(false, n, c, spatial, activation{dya.lay, n, c, spatial})
	dy := b.arrange(dya, lay)
	if dy == 0 {
		return
	}
	if !lay.nhwc {
		b.launch("bias_grad_f32", c, blockSize, 0, ptrArg(db), ptrArg(dy), intArg(n), intArg(c), intArg(spatial))
		return
	}
	partial, w := packedKernel("bn_stats_partial_nhwc_", lay, c, uintptr(dy))
	partials, parts := b.bnPartialsNHWC(n*spatial, c, w)
	if partials == 0 {
		return
	}
	b.launchNHWCPartial(partial, c, w, parts, ptrArg(partials), ptrArg(dy), intArg(n*spatial), intArg(c))
	b.launch("bias_grad_final_warp_f32", warpBlocks(c), blockSize, 0, ptrArg(db), ptrArg(partials), intArg(parts), intArg(c))
}

// ReLUForward sets y = max(x, 0).
func (b *Backend) ReLUForward(yt, xt backend.Tensor, n int) {
	p, suffix, ok := b.elementwiseStored("ReLUForward", n, written("y", yt), read("x", xt))
	if y, x := p[0], p[1]; ok && y != 0 && x != 0 {
		b.launchPacked("relu_fwd_"+suffix, n, packThreads(n, suffix), ptrArg(y), ptrArg(x), intArg(n))
	}
}

// ReLUBackward sets dx = dy where y > 0.
func (b *Backend) ReLUBackward(dxt, dyt, yt backend.Tensor, n int) {
	p, suffix, ok := b.elementwiseStored("ReLUBackward", n, written("dx", dxt), read("dy", dyt), read("y", yt))
	if dx, dy, y := p[0], p[1], p[2]; ok && dx != 0 && dy != 0 && y != 0 {
		b.launchPacked("relu_bwd_"+suffix, n, packThreads(n, suffix), ptrArg(dx), ptrArg(dy), ptrArg(y), intArg(n))
	}
}

// Batch norm in training runs in three launches (batchnorm.cu): partial
// sums over a C×P grid of blocks, their totals per channel, then one block
// per (sample, channel) row elementwise.

// bnParts is P, the blocks per channel of the partial sums: enough blocks
// in all to fill the GPU, at least about 4096 values each.
func bnParts(s backend.BNShape) int {
	return max(1, min(s.N, max(1, 1024/s.C), s.N*s.Spatial/4096))
}

// bnRowThreads is the block size of the row-wise kernels: a whole number of
// warps, no more than a row needs, at most blockSize.
func bnRowThreads(spatial int) int {
	return min(blockSize, (spatial+31)/32*32)
}

// bnCheck reports a batch norm in training that has too few values per
// channel, or one too large for the kernels' int indices.
func (b *Backend) bnCheck(op string, s backend.BNShape) bool {
	switch {
	case s.N*s.Spatial < 2:
		b.fail(fmt.Errorf("backend: %s: batch norm in training needs more than one value per channel, got N=%d spatial=%d", op, s.N, s.Spatial))
		return false
	case s.Count() > maxLaunchN:
		b.fail(fmt.Errorf("backend: %s over %d elements: kernels index with 32-bit ints", op, s.Count()))
		return false
	}
	return true
}

// bnPartialsFor returns the partial-sums buffer for a C×P grid.
func (b *Backend) bnPartialsFor(s backend.BNShape) (cu.DevicePtr, int) {
	parts := bnParts(s)
	return b.grow(&b.bnPartials, &b.bnPartialsSize, s.C*parts, 16, 1<<20, "batch-norm partial sums"), parts
}

// bnStats computes mean and invStd per channel and updates the running
// statistics.
func (b *Backend) bnStats(mean, inv, rm, rv, x cu.DevicePtr, s backend.BNShape, momentum, eps float32) {
	partials, parts := b.bnPartialsFor(s)
	if partials == 0 {
		return
	}
	b.launch2("bn_stats_partial_f32", s.C, parts, statsThreads, ptrArg(partials), ptrArg(x), intArg(s.N), intArg(s.C), intArg(s.Spatial))
	b.launch("bn_stats_final_f32", (s.C+blockSize-1)/blockSize, blockSize, 0, ptrArg(mean), ptrArg(inv), ptrArg(rm), ptrArg(rv),
		ptrArg(partials), intArg(parts), intArg(s.C), intArg(s.N*s.Spatial), floatArg(momentum), floatArg(eps))
}

// statsThreads is the block size of the partial-sum kernels
// bnLayout is the layout a batch-norm op over s runs in, given its
// activation inputs (storedLayout): its outputs have its inputs' shape.
func (b *Backend) bnLayout(s backend.BNShape, inputs ...activation) layout {
	return b.storedLayout(false, [][3]int{{s.N, s.C, s.Spatial}}, s.N, s.C, s.Spatial, inputs...)
}

// (STATS_THREADS in batchnorm.cu).
const statsThreads = 256

// BatchNormTrain normalizes with batch statistics; in NHWC where x is
// (layout.go).
func (b *Backend) BatchNormTrain(yt, xhatt, meant, invStdt, runMeant, runVart, xt, gammat, betat backend.Tensor, s backend.BNShape, momentum, eps float32) {
	const op = "BatchNormTrain"
	cnt := s.Count()
	xa, xin := b.activationIn(op, "x", xt, s.N, s.C, s.Spatial)
	mean, inv := b.output(op, "mean", meant, s.C, layout{}), b.output(op, "invStd", invStdt, s.C, layout{})
	rm, rv := b.dev(op, "runMean", runMeant, s.C), b.dev(op, "runVar", runVart, s.C)
	gamma, beta := b.dev(op, "gamma", gammat, s.C), b.dev(op, "beta", betat, s.C)
	if xa == nil || mean == 0 || inv == 0 || rm == 0 || rv == 0 || gamma == 0 || beta == 0 || !b.bnCheck(op, s) {
		return
	}
	lay := b.bnLayout(s, xin)
	x := b.arrange(xa, lay)
	y, xhat := b.output(op, "y", yt, cnt, lay), b.output(op, "xhat", xhatt, cnt, lay)
	if y == 0 || xhat == 0 || x == 0 {
		return
	}
	if lay.nhwc {
		b.bnStatsNHWC(mean, inv, rm, rv, x, lay, s, momentum, eps)
		name, threads := packedPass("bn_apply_nhwc_", lay, s.C, cnt, uintptr(y), uintptr(xhat), uintptr(x))
		b.launchPacked(name, cnt, threads, ptrArg(y), ptrArg(xhat), ptrArg(x), ptrArg(mean), ptrArg(inv),
			ptrArg(gamma), ptrArg(beta), intArg(s.C), intArg(cnt))
		return
	}
	b.bnStats(mean, inv, rm, rv, x, s, momentum, eps)
	b.launch("bn_apply_f32", s.N*s.C, bnRowThreads(s.Spatial), 0, ptrArg(y), ptrArg(xhat), ptrArg(x), ptrArg(mean), ptrArg(inv),
		ptrArg(gamma), ptrArg(beta), intArg(s.C), intArg(s.Spatial))
}

// BatchNormReLUTrain is BatchNormTrain then ReLU, keeping no xhat
// (backend.Fused).
func (b *Backend) BatchNormReLUTrain(yt, meant, invStdt, runMeant, runVart, xt, gammat, betat backend.Tensor, s backend.BNShape, momentum, eps float32) {
	const op = "BatchNormReLUTrain"
	cnt := s.Count()
	xa, xin := b.activationIn(op, "x", xt, s.N, s.C, s.Spatial)
	mean, inv := b.output(op, "mean", meant, s.C, layout{}), b.output(op, "invStd", invStdt, s.C, layout{})
	rm, rv := b.dev(op, "runMean", runMeant, s.C), b.dev(op, "runVar", runVart, s.C)
	gamma, beta := b.dev(op, "gamma", gammat, s.C), b.dev(op, "beta", betat, s.C)
	if xa == nil || mean == 0 || inv == 0 || rm == 0 || rv == 0 || gamma == 0 || beta == 0 || !b.bnCheck(op, s) {
		return
	}
	lay := b.bnLayout(s, xin)
	x := b.arrange(xa, lay)
	y := b.output(op, "y", yt, cnt, lay)
	if y == 0 || x == 0 {
		return
	}
	if lay.nhwc {
		b.bnStatsNHWC(mean, inv, rm, rv, x, lay, s, momentum, eps)
		name, threads := packedPass("bn_relu_apply_nhwc_", lay, s.C, cnt, uintptr(y), uintptr(x))
		b.launchPacked(name, cnt, threads, ptrArg(y), ptrArg(x), ptrArg(mean), ptrArg(inv),
			ptrArg(gamma), ptrArg(beta), intArg(s.C), intArg(cnt))
		return
	}
	b.bnStats(mean, inv, rm, rv, x, s, momentum, eps)
	b.launch("bn_relu_apply_f32", s.N*s.C, bnRowThreads(s.Spatial), 0, ptrArg(y), ptrArg(x), ptrArg(mean), ptrArg(inv),
		ptrArg(gamma), ptrArg(beta), intArg(s.C), intArg(s.Spatial))
}

// BatchNormEval normalizes with the running statistics; in NHWC where x
// is, in 16 bits where x is.
func (b *Backend) BatchNormEval(yt, xt, gammat, betat, runMeant, runVart backend.Tensor, s backend.BNShape, eps float32) {
	const op = "BatchNormEval"
	cnt := s.Count()
	xa, xin := b.activationIn(op, "x", xt, s.N, s.C, s.Spatial)
	gamma, beta := b.dev(op, "gamma", gammat, s.C), b.dev(op, "beta", betat, s.C)
	rm, rv := b.dev(op, "runMean", runMeant, s.C), b.dev(op, "runVar", runVart, s.C)
	if xa == nil || gamma == 0 || beta == 0 || rm == 0 || rv == 0 {
		return
	}
	lay := b.bnLayout(s, xin)
	x := b.arrange(xa, lay)
	y := b.output(op, "y", yt, cnt, lay)
	if y == 0 || x == 0 {
		return
	}
	if lay.nhwc {
		name, threads := packedPass("bn_eval_nhwc_", lay, s.C, cnt, uintptr(y), uintptr(x))
		b.launchPacked(name, cnt, threads, ptrArg(y), ptrArg(x), ptrArg(gamma), ptrArg(beta), ptrArg(rm), ptrArg(rv),
			intArg(s.C), intArg(cnt), floatArg(eps))
		return
	}
	b.launchN("bn_eval_f32", cnt, ptrArg(y), ptrArg(x), ptrArg(gamma), ptrArg(beta), ptrArg(rm), ptrArg(rv),
		intArg(s.N), intArg(s.C), intArg(s.Spatial), floatArg(eps))
}

// BatchNormBackward computes dx, dGamma, dBeta; in NHWC where dy or xhat
// is.
func (b *Backend) BatchNormBackward(dxt, dGammat, dBetat, dyt, xhatt, invStdt, gammat backend.Tensor, s backend.BNShape) {
	const op = "BatchNormBackward"
	cnt := s.Count()
	dya, dyIn := b.activationIn(op, "dy", dyt, s.N, s.C, s.Spatial)
	xhata, xhatIn := b.activationIn(op, "xhat", xhatt, s.N, s.C, s.Spatial)
	dg, db := b.output(op, "dGamma", dGammat, s.C, layout{}), b.output(op, "dBeta", dBetat, s.C, layout{})
	inv, gamma := b.dev(op, "invStd", invStdt, s.C), b.dev(op, "gamma", gammat, s.C)
	if dya == nil || xhata == nil || dg == 0 || db == 0 || inv == 0 || gamma == 0 || !b.bnCheck(op, s) {
		return
	}
	lay := b.bnLayout(s, dyIn, xhatIn)
	dy, xhat := b.arrange(dya, lay), b.arrange(xhata, lay)
	dx := b.output(op, "dx", dxt, cnt, lay)
	if dx == 0 || dy == 0 || xhat == 0 {
		return
	}
	if lay.nhwc {
		m := s.N * s.Spatial
		partial, w := packedKernel("bn_bwd_partial_nhwc_", lay, s.C, uintptr(dy), uintptr(xhat))
		partials, parts := b.bnPartialsNHWC(m, s.C, w)
		if partials == 0 {
			return
		}
		b.launchNHWCPartial(partial, s.C, w, parts, ptrArg(partials), ptrArg(dy), ptrArg(xhat), intArg(m), intArg(s.C))
		b.launch("bn_bwd_final_warp_f32", warpBlocks(s.C), blockSize, 0, ptrArg(dg), ptrArg(db), ptrArg(partials), intArg(parts), intArg(s.C))
		name, threads := packedPass("bn_bwd_apply_nhwc_", lay, s.C, cnt, uintptr(dx), uintptr(dy), uintptr(xhat))
		b.launchPacked(name, cnt, threads, ptrArg(dx), ptrArg(dy), ptrArg(xhat), ptrArg(inv),
			ptrArg(gamma), ptrArg(dg), ptrArg(db), intArg(s.C), intArg(cnt), intArg(m))
		return
	}
	partials, parts := b.bnPartialsFor(s)
	if partials == 0 {
		return
	}
	b.launch2("bn_bwd_partial_f32", s.C, parts, statsThreads, ptrArg(partials), ptrArg(dy), ptrArg(xhat), intArg(s.N), intArg(s.C), intArg(s.Spatial))
	b.launch("bn_bwd_final_f32", (s.C+blockSize-1)/blockSize, blockSize, 0, ptrArg(dg), ptrArg(db), ptrArg(partials), intArg(parts), intArg(s.C))
	b.launch("bn_bwd_apply_f32", s.N*s.C, bnRowThreads(s.Spatial), 0, ptrArg(dx), ptrArg(dy), ptrArg(xhat), ptrArg(inv),
		ptrArg(gamma), ptrArg(dg), ptrArg(db), intArg(s.C), intArg(s.Spatial), intArg(s.N*s.Spatial))
}

// BatchNormReLUBackward is the backward pass of BatchNormReLUTrain: xhat
// and the ReLU mask are recomputed from x (backend.Fused); in NHWC where
// dy or x is.
func (b *Backend) BatchNormReLUBackward(dxt, dGammat, dBetat, dyt, xt, meant, invStdt, gammat, betat backend.Tensor, s backend.BNShape) {
	const op = "BatchNormReLUBackward"
	cnt := s.Count()
	dya, dyIn := b.activationIn(op, "dy", dyt, s.N, s.C, s.Spatial)
	xa, xin := b.activationIn(op, "x", xt, s.N, s.C, s.Spatial)
	dg, db := b.output(op, "dGamma", dGammat, s.C, layout{}), b.output(op, "dBeta", dBetat, s.C, layout{})
	mean, inv := b.dev(op, "mean", meant, s.C), b.dev(op, "invStd", invStdt, s.C)
	gamma, beta := b.dev(op, "gamma", gammat, s.C), b.dev(op, "beta", betat, s.C)
	if dya == nil || xa == nil || dg == 0 || db == 0 || mean == 0 || inv == 0 || gamma == 0 || beta == 0 || !b.bnCheck(op, s) {
		return
	}
	lay := b.bnLayout(s, dyIn, xin)
	dy, x := b.arrange(dya, lay), b.arrange(xa, lay)
	dx := b.output(op, "dx", dxt, cnt, lay)
	if dx == 0 || dy == 0 || x == 0 {
		return
	}
	if lay.nhwc {
		m := s.N * s.Spatial
		partial, w := packedKernel("bn_relu_bwd_partial_nhwc_", lay, s.C, uintptr(dy), uintptr(x))
		partials, parts := b.bnPartialsNHWC(m, s.C, w)
		if partials == 0 {
			return
		}
		b.launchNHWCPartial(partial, s.C, w, parts, ptrArg(partials), ptrArg(dy), ptrArg(x), ptrArg(mean), ptrArg(inv),
			ptrArg(gamma), ptrArg(beta), intArg(m), intArg(s.C))
		b.launch("bn_bwd_final_warp_f32", warpBlocks(s.C), blockSize, 0, ptrArg(dg), ptrArg(db), ptrArg(partials), intArg(parts), intArg(s.C))
		name, threads := packedPass("bn_relu_bwd_apply_nhwc_", lay, s.C, cnt, uintptr(dx), uintptr(dy), uintptr(x))
		b.launchPacked(name, cnt, threads, ptrArg(dx), ptrArg(dy), ptrArg(x), ptrArg(mean), ptrArg(inv),
			ptrArg(gamma), ptrArg(beta), ptrArg(dg), ptrArg(db), intArg(s.C), intArg(cnt), intArg(m))
		return
	}
	partials, parts := b.bnPartialsFor(s)
	if partials == 0 {
		return
	}
	b.launch2("bn_relu_bwd_partial_f32", s.C, parts, statsThreads, ptrArg(partials), ptrArg(dy), ptrArg(x), ptrArg(mean), ptrArg(inv),
		ptrArg(gamma), ptrArg(beta), intArg(s.N), intArg(s.C), intArg(s.Spatial))
	b.launch("bn_bwd_final_f32", (s.C+blockSize-1)/blockSize, blockSize, 0, ptrArg(dg), ptrArg(db), ptrArg(partials), intArg(parts), intArg(s.C))
	b.launch("bn_relu_bwd_apply_f32", s.N*s.C, bnRowThreads(s.Spatial), 0, ptrArg(dx), ptrArg(dy), ptrArg(x), ptrArg(mean), ptrArg(inv),
		ptrArg(gamma), ptrArg(beta), ptrArg(dg), ptrArg(db), intArg(s.C), intArg(s.Spatial), intArg(s.N*s.Spatial))
}

// warpBlocks is the number of blocks of blockSize threads that give each
// of rows rows a warp.
func warpBlocks(rows int) int { return (rows*32 + blockSize - 1) / blockSize }

// LogSoftmax computes row-wise log-softmax (a warp per row).
func (b *Backend) LogSoftmax(yt, xt backend.Tensor, rows, cols int) {
	y, x := b.dev("LogSoftmax", "y", yt, rows*cols), b.dev("LogSoftmax", "x", xt, rows*cols)
	if y != 0 && x != 0 {
		b.launch("log_softmax_f32", warpBlocks(rows), blockSize, 0, ptrArg(y), ptrArg(x), intArg(rows), intArg(cols))
	}
}

// nllThreads is nll_f32's one block (NLL_THREADS in kernels/loss.cu).
const nllThreads = 1024

// NLLLoss accumulates the summed loss and the correct count, in a fixed
// order (one block); a label that is not a class is reported by the next
// Sync.
func (b *Backend) NLLLoss(sumst, logpt, labelst backend.Tensor, rows, cols int) {
	sums, logp, labels := b.dev("NLLLoss", "sums", sumst, 3), b.dev("NLLLoss", "logp", logpt, rows*cols), b.dev("NLLLoss", "labels", labelst, rows)
	if sums != 0 && logp != 0 && labels != 0 {
		b.launch("nll_f32", 1, nllThreads, 0, ptrArg(sums), ptrArg(logp), ptrArg(labels), intArg(rows), intArg(cols), ptrArg(b.badLabel))
	}
}

// LogSoftmaxNLLBackward sets dx = scale·(softmax − onehot), times the loss
// scale at precision fp16 (lossscale.go).
func (b *Backend) LogSoftmaxNLLBackward(dxt, logpt, labelst backend.Tensor, rows, cols int, scale float32) {
	const op = "LogSoftmaxNLLBackward"
	dx, logp, labels := b.dev(op, "dx", dxt, rows*cols), b.dev(op, "logp", logpt, rows*cols), b.dev(op, "labels", labelst, rows)
	if dx != 0 && logp != 0 && labels != 0 {
		b.launchN("log_softmax_nll_bwd_f32", rows*cols, ptrArg(dx), ptrArg(logp), ptrArg(labels), intArg(rows), intArg(cols), floatArg(scale), ptrArg(b.badLabel), ptrArg(b.lossScalePtr()))
	}
}

// Sign sets dst = sign(src), sign(0) = +1.
func (b *Backend) Sign(dstt, srct backend.Tensor, n int) {
	p, ok := b.elementwise("Sign", n, written("dst", dstt), read("src", srct))
	if d, s := p[0], p[1]; ok && d != 0 && s != 0 {
		b.launchN("sign_f32", n, ptrArg(d), ptrArg(s), intArg(n))
	}
}

// SignScaled sets each row of dst to mean(|src row|)·sign(src row). A
// filter stored NHWC (a row per output channel, its elements reordered
// within the row) is scaled as it is.
func (b *Backend) SignScaled(dstt, srct backend.Tensor, rows, cols int) {
	sa := b.tensorArg("SignScaled", "src", srct, rows*cols)
	if sa == nil {
		return
	}
	lay := layout{}
	if sa.lay.nhwc && sa.lay.n == rows && sa.lay.count() == rows*cols {
		lay = sa.lay.inFloat32()
	}
	s := b.arrange(sa, lay)
	d := b.output("SignScaled", "dst", dstt, rows*cols, lay)
	if d != 0 && s != 0 && rows > 0 {
		b.launch("sign_scaled_f32", rows, blockSize, 0, ptrArg(d), ptrArg(s), intArg(rows), intArg(cols))
	}
}

// STEClippedMask zeroes grad where |latent| > 1.
func (b *Backend) STEClippedMask(gradt, latentt backend.Tensor, n int) {
	p, ok := b.elementwise("STEClippedMask", n, readWritten("grad", gradt), read("latent", latentt))
	if g, w := p[0], p[1]; ok && g != 0 && w != 0 {
		b.launchN("ste_clipped_mask_f32", n, ptrArg(g), ptrArg(w), intArg(n))
	}
}

// Clip limits t to [lo, hi].
func (b *Backend) Clip(tt backend.Tensor, lo, hi float32, n int) {
	if p, ok := b.elementwise("Clip", n, readWritten("t", tt)); ok && p[0] != 0 {
		b.launchN("clip_f32", n, ptrArg(p[0]), floatArg(lo), floatArg(hi), intArg(n))
	}
}

// AdamStep performs one Adam update; bias corrections are computed here,
// or at precision fp16, where g is the scaled gradient and t counts only
// the steps not skipped, by the kernel (lossscale.go).
func (b *Backend) AdamStep(wt, gt, mt, vt backend.Tensor, n int, p backend.AdamParams) {
	d, ok := b.elementwise("AdamStep", n, readWritten("w", wt), read("g", gt), readWritten("m", mt), readWritten("v", vt))
	w, g, m, v := d[0], d[1], d[2], d[3]
	if !ok || w == 0 || g == 0 || m == 0 || v == 0 {
		return
	}
	if p.Step < 1 {
		b.fail(errors.New("backend: AdamStep: step must be at least 1"))
		return
	}
	bc1 := 1 - math.Pow(float64(p.Beta1), float64(p.Step))
	bc2 := 1 - math.Pow(float64(p.Beta2), float64(p.Step))
	b.launchN("adam_f32", n, ptrArg(w), ptrArg(g), ptrArg(m), ptrArg(v), intArg(n), floatArg(p.Beta1), floatArg(p.Beta2),
		floatArg(p.Eps), floatArg(p.WeightDecay), floatArg(float32(float64(p.LR)/bc1)), floatArg(float32(math.Sqrt(bc2))),
		floatArg(p.LR), intArg(p.Step), ptrArg(b.lossScalePtr()))
}

// SGDStep performs one SGD update; at precision fp16 of the scaled
// gradient (lossscale.go).
func (b *Backend) SGDStep(wt, gt, buft backend.Tensor, n int, p backend.SGDParams) {
	d, ok := b.elementwise("SGDStep", n, readWritten("w", wt), read("g", gt), readWritten("buf", buft))
	w, g, buf := d[0], d[1], d[2]
	if !ok || w == 0 || g == 0 || buf == 0 {
		return
	}
	nesterov := 0
	if p.Nesterov {
		nesterov = 1
	}
	b.launchN("sgd_f32", n, ptrArg(w), ptrArg(g), ptrArg(buf), intArg(n), floatArg(p.LR), floatArg(p.Momentum), floatArg(p.WeightDecay), intArg(nesterov), ptrArg(b.lossScalePtr()))
}

// convShapeOK says whether s is a convolution: positive sizes, and a
// kernel that fits the padded input. The last is checked itself, not
// through OutH and OutW: (H+2·Pad−KH)/Stride + 1 truncates toward zero,
// so a kernel up to Stride−1 rows or columns too large still gives an
// output of 1.
func convShapeOK(s backend.ConvShape) bool {
	return s.N >= 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.OC > 0 && s.KH > 0 && s.KW > 0 && s.Stride > 0 && s.Pad >= 0 &&
		s.H+2*s.Pad >= s.KH && s.W+2*s.Pad >= s.KW
}

func pointwise(s backend.ConvShape) bool {
	return s.KH == 1 && s.KW == 1 && s.Stride == 1 && s.Pad == 0
}

// convChunk is how many samples' columns fit the workspace at once.
func convChunk(s backend.ConvShape) int {
	per := s.C * s.KH * s.KW * s.OutH() * s.OutW()
	return max(1, min(s.N, maxWorkspaceFloats/per))
}

func (b *Backend) im2col(cols, x cu.DevicePtr, s backend.ConvShape, n int) {
	b.launchN("im2col_f32", n*s.C*s.KH*s.KW*s.OutH()*s.OutW(), ptrArg(cols), ptrArg(x), intArg(n), intArg(s.C), intArg(s.H), intArg(s.W),
		intArg(s.KH), intArg(s.KW), intArg(s.Stride), intArg(s.Pad), intArg(s.OutH()), intArg(s.OutW()))
}

// Conv2DForward runs on cuDNN where it loaded (cudnn_conv.go), in NHWC
// with channels-last on; otherwise im2col for a chunk of samples, then
// one strided-batched GEMM y[n] = W·cols[n] (at precision bf16 or fp16 on
// 16-bit copies, half.go).
func (b *Backend) Conv2DForward(yt, xt, wt backend.Tensor, s backend.ConvShape) {
	b.convolve("Conv2DForward", dnnForward, s, [3]convOperand{{"x", xt}, {"w", wt}, {"y", yt}})
}

// conv2DForwardIm2col is Conv2DForward on the im2col path.
func (b *Backend) conv2DForwardIm2col(y, x, w cu.DevicePtr, s backend.ConvShape) {
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	if b.half.on() {
		b.conv2DForwardHalf(y, x, w, s)
		return
	}
	chunk := convChunk(s)
	for n0 := 0; n0 < s.N && b.err == nil; n0 += chunk {
		cnt := min(chunk, s.N-n0)
		cols := off(x, n0*in)
		if !pointwise(s) {
			if cols = b.scratch(chunk * k * p); cols == 0 {
				return
			}
			b.im2col(cols, off(x, n0*in), s, cnt)
		}
		if b.err != nil {
			return
		}
		b.fail(b.blas.gemmStrided(false, false, s.OC, p, k, 1, uintptr(w), 0, uintptr(cols), k*p, 0, uintptr(off(y, n0*out)), out, cnt))
	}
}

// Conv2DBackwardData runs on cuDNN where it loaded; otherwise
// cols[n] = Wᵀ·dy[n] (strided-batched), then col2im (at precision bf16 or
// fp16 the GEMM's inputs are 16-bit copies).
func (b *Backend) Conv2DBackwardData(dxt, dyt, wt backend.Tensor, s backend.ConvShape) {
	b.convolve("Conv2DBackwardData", dnnBackwardData, s, [3]convOperand{{"w", wt}, {"dy", dyt}, {"dx", dxt}})
}

// conv2DBackwardDataIm2col is Conv2DBackwardData on the im2col path.
func (b *Backend) conv2DBackwardDataIm2col(dx, dy, w cu.DevicePtr, s backend.ConvShape) {
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	if b.half.on() {
		b.conv2DBackwardDataHalf(dx, dy, w, s)
		return
	}
	chunk := convChunk(s)
	for n0 := 0; n0 < s.N && b.err == nil; n0 += chunk {
		cnt := min(chunk, s.N-n0)
		if pointwise(s) {
			b.fail(b.blas.gemmStrided(true, false, k, p, s.OC, 1, uintptr(w), 0, uintptr(off(dy, n0*out)), out, 0, uintptr(off(dx, n0*in)), in, cnt))
			continue
		}
		cols := b.scratch(chunk * k * p)
		if cols == 0 || b.err != nil {
			return
		}
		b.fail(b.blas.gemmStrided(true, false, k, p, s.OC, 1, uintptr(w), 0, uintptr(off(dy, n0*out)), out, 0, uintptr(cols), k*p, cnt))
		b.launchN("col2im_f32", cnt*in, ptrArg(off(dx, n0*in)), ptrArg(cols), intArg(cnt), intArg(s.C), intArg(s.H), intArg(s.W),
			intArg(s.KH), intArg(s.KW), intArg(s.Stride), intArg(s.Pad), intArg(s.OutH()), intArg(s.OutW()))
	}
}

// Conv2DBackwardFilter runs on cuDNN where it loaded; otherwise
// dw = Σ_n dy[n]·cols[n]ᵀ, one GEMM per sample accumulating in sample
// order (at precision bf16 or fp16 on 16-bit copies of dy and the
// columns).
func (b *Backend) Conv2DBackwardFilter(dwt, dyt, xt backend.Tensor, s backend.ConvShape) {
	b.convolve("Conv2DBackwardFilter", dnnBackwardFilter, s, [3]convOperand{{"x", xt}, {"dy", dyt}, {"dw", dwt}})
}

// conv2DBackwardFilterIm2col is Conv2DBackwardFilter on the im2col path.
func (b *Backend) conv2DBackwardFilterIm2col(dw, dy, x cu.DevicePtr, s backend.ConvShape) {
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	if b.half.on() {
		b.conv2DBackwardFilterHalf(dw, dy, x, s)
		return
	}
	chunk := convChunk(s)
	for n0 := 0; n0 < s.N && b.err == nil; n0 += chunk {
		cnt := min(chunk, s.N-n0)
		cols := off(x, n0*in)
		if !pointwise(s) {
			if cols = b.scratch(chunk * k * p); cols == 0 {
				return
			}
			b.im2col(cols, off(x, n0*in), s, cnt)
		}
		for i := 0; i < cnt && b.err == nil; i++ {
			beta := float32(1)
			if n0+i == 0 {
				beta = 0
			}
			b.fail(b.blas.gemm(false, true, s.OC, k, p, 1, uintptr(off(dy, (n0+i)*out)), uintptr(off(cols, i*k*p)), beta, uintptr(dw)))
		}
	}
}

// poolShapeOK checks a max-pooling shape (recording the error where it is
// bad): windows and strides of at least 1, padding of at most half a
// window, an output of at least one position.
func (b *Backend) poolShapeOK(op string, s backend.PoolShape) bool {
	if s.Kernel < 1 || s.Stride < 1 || s.Pad < 0 || 2*s.Pad > s.Kernel || s.OutH() < 1 || s.OutW() < 1 {
		b.fail(fmt.Errorf("backend: %s: bad shape %+v", op, s))
		return false
	}
	return true
}

// MaxPool2DForward takes window maxima and their positions; in NHWC
// where x is (argmax then too, still holding positions within a plane).
func (b *Backend) MaxPool2DForward(yt, argt, xt backend.Tensor, s backend.PoolShape) {
	const op = "MaxPool2DForward"
	if !b.poolShapeOK(op, s) {
		return
	}
	oh, ow := s.OutH(), s.OutW()
	xa, xin := b.activationIn(op, "x", xt, s.N, s.C, s.H*s.W)
	if xa == nil {
		return
	}
	lay := b.storedLayout(false, [][3]int{{s.N, s.C, oh * ow}}, s.N, s.C, s.H*s.W, xin)
	x := b.arrange(xa, lay)
	outLay := lay.as(s.N, s.C, oh*ow)
	y, arg := b.output(op, "y", yt, s.N*s.C*oh*ow, outLay), b.output(op, "argmax", argt, s.N*s.C*oh*ow, outLay.inFloat32())
	if y == 0 || arg == 0 || x == 0 {
		return
	}
	if lay.nhwc {
		b.launchN("maxpool_fwd_nhwc_"+storageSuffix(lay), s.N*s.C*oh*ow, ptrArg(y), ptrArg(arg), ptrArg(x), intArg(s.N), intArg(s.C), intArg(s.H), intArg(s.W),
			intArg(s.Kernel), intArg(s.Stride), intArg(s.Pad), intArg(oh), intArg(ow),
			divMul(s.C), divShift(s.C), divMul(ow), divShift(ow), divMul(oh), divShift(oh))
		return
	}
	b.launchN("maxpool_fwd_f32", s.N*s.C*oh*ow, ptrArg(y), ptrArg(arg), ptrArg(x), intArg(s.N*s.C), intArg(s.H), intArg(s.W),
		intArg(s.Kernel), intArg(s.Stride), intArg(s.Pad), intArg(oh), intArg(ow), divMul(ow), divShift(ow), divMul(oh), divShift(oh))
}

// MaxPool2DBackward routes dy to the arg-max positions; in NHWC where dy
// or argmax is.
func (b *Backend) MaxPool2DBackward(dxt, dyt, argt backend.Tensor, s backend.PoolShape) {
	const op = "MaxPool2DBackward"
	if !b.poolShapeOK(op, s) {
		return
	}
	oh, ow := s.OutH(), s.OutW()
	dya, dyIn := b.activationIn(op, "dy", dyt, s.N, s.C, oh*ow)
	arga, argIn := b.activationIn(op, "argmax", argt, s.N, s.C, oh*ow)
	if dya == nil || arga == nil {
		return
	}
	// The argmax positions are float32 whatever dy is.
	lay := b.activationLayout(false, s.N, s.C, oh*ow, dyIn, argIn)
	if lay.nhwc && halfFor(b.storage, [][3]int{{s.N, s.C, s.H * s.W}}, dyIn) {
		lay = lay.inHalf(b.storage)
	}
	dy, arg := b.arrange(dya, lay), b.arrange(arga, lay.inFloat32())
	dx := b.output(op, "dx", dxt, s.N*s.C*s.H*s.W, lay.as(s.N, s.C, s.H*s.W))
	if dx == 0 || dy == 0 || arg == 0 {
		return
	}
	if lay.nhwc {
		b.launchN("maxpool_bwd_nhwc_"+storageSuffix(lay), s.N*s.C*s.H*s.W, ptrArg(dx), ptrArg(dy), ptrArg(arg), intArg(s.N), intArg(s.C), intArg(s.H), intArg(s.W),
			intArg(s.Kernel), intArg(s.Stride), intArg(s.Pad), intArg(oh), intArg(ow),
			divMul(s.C), divShift(s.C), divMul(s.W), divShift(s.W), divMul(s.H), divShift(s.H), divMul(s.Stride), divShift(s.Stride))
		return
	}
	b.launchN("maxpool_bwd_f32", s.N*s.C*s.H*s.W, ptrArg(dx), ptrArg(dy), ptrArg(arg), intArg(s.N*s.C), intArg(s.H), intArg(s.W),
		intArg(s.Kernel), intArg(s.Stride), intArg(s.Pad), intArg(oh), intArg(ow),
		divMul(s.W), divShift(s.W), divMul(s.H), divShift(s.H), divMul(s.Stride), divShift(s.Stride))
}

// GlobalAvgPoolForward averages each plane; reads NHWC x as it is.
func (b *Backend) GlobalAvgPoolForward(yt, xt backend.Tensor, n, c, spatial int) {
	const op = "GlobalAvgPoolForward"
	xa, xin := b.activationIn(op, "x", xt, n, c, spatial)
	if xa == nil {
		return
	}
	lay := b.storedLayout(false, nil, n, c, spatial, xin)
	x := b.arrange(xa, lay)
	y := b.output(op, "y", yt, n*c, layout{})
	if y == 0 || x == 0 {
		return
	}
	if lay.nhwc {
		b.launch("gap_fwd_nhwc_"+storageSuffix(lay), (n*c+blockSize-1)/blockSize, blockSize, 0, ptrArg(y), ptrArg(x), intArg(n), intArg(c), intArg(spatial))
		return
	}
	b.launch("gap_fwd_f32", (n*c+blockSize-1)/blockSize, blockSize, 0, ptrArg(y), ptrArg(x), intArg(n*c), intArg(spatial))
}

// GlobalAvgPoolBackward spreads dy over each plane, writing NHWC where
// channels-last is on.
func (b *Backend) GlobalAvgPoolBackward(dxt, dyt backend.Tensor, n, c, spatial int) {
	const op = "GlobalAvgPoolBackward"
	dy := b.dev(op, "dy", dyt, n*c)
	lay := b.storedLayout(b.channelsLast, [][3]int{{n, c, spatial}}, n, c, spatial)
	dx := b.output(op, "dx", dxt, n*c*spatial, lay)
	if dx == 0 || dy == 0 {
		return
	}
	if lay.nhwc {
		b.launchN("gap_bwd_nhwc_"+storageSuffix(lay), n*c*spatial, ptrArg(dx), ptrArg(dy), intArg(n), intArg(c), intArg(spatial),
			divMul(spatial*c), divShift(spatial*c), divMul(c), divShift(c))
		return
	}
	b.launchN("gap_bwd_f32", n*c*spatial, ptrArg(dx), ptrArg(dy), intArg(n*c), intArg(spatial))
}

// Add sets y = a + b.
func (b *Backend) Add(yt, at, bt backend.Tensor, n int) {
	p, suffix, ok := b.elementwiseStored("Add", n, written("y", yt), read("a", at), read("b", bt))
	if y, a, c := p[0], p[1], p[2]; ok && y != 0 && a != 0 && c != 0 {
		b.launchPacked("add_"+suffix, n, packThreads(n, suffix), ptrArg(y), ptrArg(a), ptrArg(c), intArg(n))
	}
}

// AddReLU is y = max(a+b, 0) (backend.Fused).
func (b *Backend) AddReLU(yt, at, bt backend.Tensor, n int) {
	p, suffix, ok := b.elementwiseStored("AddReLU", n, written("y", yt), read("a", at), read("b", bt))
	if y, a, c := p[0], p[1], p[2]; ok && y != 0 && a != 0 && c != 0 {
		b.launchPacked("add_relu_"+suffix, n, packThreads(n, suffix), ptrArg(y), ptrArg(a), ptrArg(c), intArg(n))
	}
}

var _ backend.Fused = (*Backend)(nil)

func shortcutOK(s backend.ShortcutShape) bool {
	return s.N >= 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.Stride > 0 && s.OC >= s.C && (s.OC-s.C)%2 == 0
}

// ShortcutAForward is the option-A shortcut; in NHWC where x is.
func (b *Backend) ShortcutAForward(yt, xt backend.Tensor, s backend.ShortcutShape) {
	const op = "ShortcutAForward"
	if !shortcutOK(s) {
		b.fail(fmt.Errorf("backend: %s: bad shape %+v (OC must be C plus an even number)", op, s))
		return
	}
	oh, ow := s.OutH(), s.OutW()
	xa, xin := b.activationIn(op, "x", xt, s.N, s.C, s.H*s.W)
	if xa == nil {
		return
	}
	lay := b.storedLayout(false, [][3]int{{s.N, s.OC, oh * ow}}, s.N, s.C, s.H*s.W, xin)
	x := b.arrange(xa, lay)
	y := b.output(op, "y", yt, s.N*s.OC*oh*ow, lay.as(s.N, s.OC, oh*ow))
	if y == 0 || x == 0 {
		return
	}
	name := "shortcut_a_fwd_f32"
	if lay.nhwc {
		name = "shortcut_a_fwd_nhwc_" + storageSuffix(lay)
	}
	b.launchN(name, s.N*s.OC*oh*ow, ptrArg(y), ptrArg(x), intArg(s.N), intArg(s.C), intArg(s.H), intArg(s.W),
		intArg(s.OC), intArg(s.Stride), intArg(oh), intArg(ow), divMul(s.OC), divShift(s.OC), divMul(ow), divShift(ow), divMul(oh), divShift(oh))
}

// ShortcutABackward is its transpose; in NHWC where dy is.
func (b *Backend) ShortcutABackward(dxt, dyt backend.Tensor, s backend.ShortcutShape) {
	const op = "ShortcutABackward"
	if !shortcutOK(s) {
		b.fail(fmt.Errorf("backend: %s: bad shape %+v (OC must be C plus an even number)", op, s))
		return
	}
	oh, ow := s.OutH(), s.OutW()
	dya, dyIn := b.activationIn(op, "dy", dyt, s.N, s.OC, oh*ow)
	if dya == nil {
		return
	}
	lay := b.storedLayout(false, [][3]int{{s.N, s.C, s.H * s.W}}, s.N, s.OC, oh*ow, dyIn)
	dy := b.arrange(dya, lay)
	dx := b.output(op, "dx", dxt, s.N*s.C*s.H*s.W, lay.as(s.N, s.C, s.H*s.W))
	if dx == 0 || dy == 0 {
		return
	}
	name := "shortcut_a_bwd_f32"
	if lay.nhwc {
		name = "shortcut_a_bwd_nhwc_" + storageSuffix(lay)
	}
	b.launchN(name, s.N*s.C*s.H*s.W, ptrArg(dx), ptrArg(dy), intArg(s.N), intArg(s.C), intArg(s.H), intArg(s.W),
		intArg(s.OC), intArg(s.Stride), intArg(oh), intArg(ow),
		divMul(s.C), divShift(s.C), divMul(s.W), divShift(s.W), divMul(s.H), divShift(s.H), divMul(s.Stride), divShift(s.Stride))
}

var _ backend.FusedResidual = (*Backend)(nil)

// BatchNormAddReLUTrain is BatchNormTrain of x then AddReLU with skip,
// keeping no xhat (backend.FusedResidual); in NHWC where x or skip is.
func (b *Backend) BatchNormAddReLUTrain(yt, meant, invStdt, runMeant, runVart, xt, skipt, gammat, betat backend.Tensor, s backend.BNShape, momentum, eps float32) {
	const op = "BatchNormAddReLUTrain"
	cnt := s.Count()
	xa, xin := b.activationIn(op, "x", xt, s.N, s.C, s.Spatial)
	skipa, skipIn := b.activationIn(op, "skip", skipt, s.N, s.C, s.Spatial)
	mean, inv := b.output(op, "mean", meant, s.C, layout{}), b.output(op, "invStd", invStdt, s.C, layout{})
	rm, rv := b.dev(op, "runMean", runMeant, s.C), b.dev(op, "runVar", runVart, s.C)
	gamma, beta := b.dev(op, "gamma", gammat, s.C), b.dev(op, "beta", betat, s.C)
	if xa == nil || skipa == nil || mean == 0 || inv == 0 || rm == 0 || rv == 0 || gamma == 0 || beta == 0 || !b.bnCheck(op, s) {
		return
	}
	lay := b.bnLayout(s, xin, skipIn)
	x, skip := b.arrange(xa, lay), b.arrange(skipa, lay)
	y := b.output(op, "y", yt, cnt, lay)
	if y == 0 || x == 0 || skip == 0 {
		return
	}
	if lay.nhwc {
		b.bnStatsNHWC(mean, inv, rm, rv, x, lay, s, momentum, eps)
		name, threads := packedPass("bn_add_relu_apply_nhwc_", lay, s.C, cnt, uintptr(y), uintptr(x), uintptr(skip))
		b.launchPacked(name, cnt, threads, ptrArg(y), ptrArg(x), ptrArg(skip), ptrArg(mean), ptrArg(inv),
			ptrArg(gamma), ptrArg(beta), intArg(s.C), intArg(cnt))
		return
	}
	b.bnStats(mean, inv, rm, rv, x, s, momentum, eps)
	b.launch("bn_add_relu_apply_f32", s.N*s.C, bnRowThreads(s.Spatial), 0, ptrArg(y), ptrArg(x), ptrArg(skip), ptrArg(mean), ptrArg(inv),
		ptrArg(gamma), ptrArg(beta), intArg(s.C), intArg(s.Spatial))
}

// BatchNormAddReLUBackward is ReLUBackward of dy through y into dSum, then
// BatchNormBackward of dSum with xhat recomputed from x
// (backend.FusedResidual); in NHWC where dy, y or x is.
func (b *Backend) BatchNormAddReLUBackward(dxt, dGammat, dBetat, dSumt, dyt, yt, xt, meant, invStdt, gammat backend.Tensor, s backend.BNShape) {
	const op = "BatchNormAddReLUBackward"
	cnt := s.Count()
	dya, dyIn := b.activationIn(op, "dy", dyt, s.N, s.C, s.Spatial)
	ya, yin := b.activationIn(op, "y", yt, s.N, s.C, s.Spatial)
	xa, xin := b.activationIn(op, "x", xt, s.N, s.C, s.Spatial)
	dg, db := b.output(op, "dGamma", dGammat, s.C, layout{}), b.output(op, "dBeta", dBetat, s.C, layout{})
	mean, inv, gamma := b.dev(op, "mean", meant, s.C), b.dev(op, "invStd", invStdt, s.C), b.dev(op, "gamma", gammat, s.C)
	if dya == nil || ya == nil || xa == nil || dg == 0 || db == 0 || mean == 0 || inv == 0 || gamma == 0 || !b.bnCheck(op, s) {
		return
	}
	lay := b.bnLayout(s, dyIn, yin, xin)
	dy, y, x := b.arrange(dya, lay), b.arrange(ya, lay), b.arrange(xa, lay)
	dx, dSum := b.output(op, "dx", dxt, cnt, lay), b.output(op, "dSum", dSumt, cnt, lay)
	if dx == 0 || dSum == 0 || dy == 0 || y == 0 || x == 0 {
		return
	}
	if lay.nhwc {
		m := s.N * s.Spatial
		partial, w := packedKernel("bn_add_relu_bwd_partial_nhwc_", lay, s.C, uintptr(dy), uintptr(y), uintptr(x))
		partials, parts := b.bnPartialsNHWC(m, s.C, w)
		if partials == 0 {
			return
		}
		b.launchNHWCPartial(partial, s.C, w, parts, ptrArg(partials), ptrArg(dy), ptrArg(y), ptrArg(x),
			ptrArg(mean), ptrArg(inv), intArg(m), intArg(s.C))
		b.launch("bn_bwd_final_warp_f32", warpBlocks(s.C), blockSize, 0, ptrArg(dg), ptrArg(db), ptrArg(partials), intArg(parts), intArg(s.C))
		name, threads := packedPass("bn_add_relu_bwd_apply_nhwc_", lay, s.C, cnt, uintptr(dx), uintptr(dSum), uintptr(dy), uintptr(y), uintptr(x))
		b.launchPacked(name, cnt, threads, ptrArg(dx), ptrArg(dSum), ptrArg(dy), ptrArg(y), ptrArg(x), ptrArg(mean), ptrArg(inv),
			ptrArg(gamma), ptrArg(dg), ptrArg(db), intArg(s.C), intArg(cnt), intArg(m))
		return
	}
	partials, parts := b.bnPartialsFor(s)
	if partials == 0 {
		return
	}
	b.launch2("bn_add_relu_bwd_partial_f32", s.C, parts, statsThreads, ptrArg(partials), ptrArg(dy), ptrArg(y), ptrArg(x),
		ptrArg(mean), ptrArg(inv), intArg(s.N), intArg(s.C), intArg(s.Spatial))
	b.launch("bn_bwd_final_f32", (s.C+blockSize-1)/blockSize, blockSize, 0, ptrArg(dg), ptrArg(db), ptrArg(partials), intArg(parts), intArg(s.C))
	b.launch("bn_add_relu_bwd_apply_f32", s.N*s.C, bnRowThreads(s.Spatial), 0, ptrArg(dx), ptrArg(dSum), ptrArg(dy), ptrArg(y), ptrArg(x),
		ptrArg(mean), ptrArg(inv), ptrArg(gamma), ptrArg(dg), ptrArg(db), intArg(s.C), intArg(s.Spatial), intArg(s.N*s.Spatial))
}

// Conv2DBackwardDataAdd adds the input gradient of a convolution to dx
// (backend.FusedResidual): Conv2DBackwardData into the backend's
// gradient scratch, then Add, the same values as the pair. With 16-bit
// storage, where dx is stored so already, cuDNN adds it in place instead
// (convolveAdd): one rounding of the sum, not two, and no pass of Add.
func (b *Backend) Conv2DBackwardDataAdd(dxt, dyt, wt backend.Tensor, s backend.ConvShape) {
	const op = "Conv2DBackwardDataAdd"
	if b.convolveAdd(op, dnnBackwardData, s, [3]convOperand{{"w", wt}, {"dy", dyt}, {"dx", dxt}}) {
		return
	}
	n := s.N * s.C * s.H * s.W
	if n == 0 { // checks the arguments, writes nothing
		b.convolve(op, dnnBackwardData, s, [3]convOperand{{"w", wt}, {"dy", dyt}, {"dx", dxt}})
		return
	}
	if b.tensorArg(op, "dx", dxt, n) == nil {
		return
	}
	tmp := &b.gradScratch
	if b.grow(&tmp.ptr, &tmp.n, n, 4, maxLaunchN, "gradient scratch") == 0 {
		return
	}
	tmp.owner, tmp.lay = b, layout{}
	b.convolve(op, dnnBackwardData, s, [3]convOperand{{"w", wt}, {"dy", dyt}, {"dx (scratch)", tmp}})
	b.Add(dxt, dxt, tmp, n)
}
