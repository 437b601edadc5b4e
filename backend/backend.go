// Package backend owns the contract between iterbin's layers and the hardware
// that runs them: the Backend interface of ops (GEMM, batch norm, activations,
// loss, sign/straight-through, optimizer updates) and the opaque Tensor handle.
//
// Conventions every implementation follows (the CPU backend in backend/cpu is
// the executable reference):
//
//   - Tensors are flat float32 buffers owned by the backend that allocated
//     them. Layers never read host memory during a step; data crosses with
//     Upload and Download only.
//   - Every op takes explicit element counts; a tensor may be larger than the
//     region an op touches (buffers are sized for the largest batch).
//   - Outputs come first in every signature, then inputs, then sizes.
//   - Outputs are overwritten (=), never accumulated, unless the op's comment
//     says "accumulates" (the metric sums of NLLLoss do).
//   - Ops do not return errors. A backend records the first failure (a bad
//     size, a failed launch) and reports it from Err and Sync; callers check
//     once per step. This keeps asynchronous devices asynchronous.
//   - Class labels travel as float32 tensors holding small integers, which
//     float32 represents exactly.
//
// Optional interfaces add to Backend: Fused and FusedResidual (op pairs
// and a residual block's end in one pass, which layers use when a backend
// has them), AsyncDownloader (small downloads
// that do not wait for later work, which the trainer uses to read each
// step's loss one step late), LossScaler (dynamic loss scaling, which the
// trainer's optimizer drives) and Float64Host.
package backend

import (
	"fmt"
	"time"
)

// Tensor is an opaque handle to a buffer owned by a Backend.
type Tensor interface {
	// Len is the number of float32 elements the buffer holds.
	Len() int
}

// BNShape describes a batch-norm input laid out as N×C×Spatial (NCHW with
// H·W flattened); a 1-d batch norm over features has Spatial = 1.
type BNShape struct {
	N, C, Spatial int
}

// Count is the number of elements of the whole input.
func (s BNShape) Count() int { return s.N * s.C * s.Spatial }

// ConvShape describes a 2-d convolution over a batch in NCHW layout.
type ConvShape struct {
	N, C, H, W  int // input
	OC, KH, KW  int // filters
	Stride, Pad int
}

// OutH is the output height.
func (s ConvShape) OutH() int { return (s.H+2*s.Pad-s.KH)/s.Stride + 1 }

// OutW is the output width.
func (s ConvShape) OutW() int { return (s.W+2*s.Pad-s.KW)/s.Stride + 1 }

// PoolShape describes a 2-d max pooling over a batch in NCHW layout.
type PoolShape struct {
	N, C, H, W          int
	Kernel, Stride, Pad int
}

// OutH is the output height.
func (s PoolShape) OutH() int { return (s.H+2*s.Pad-s.Kernel)/s.Stride + 1 }

// OutW is the output width.
func (s PoolShape) OutW() int { return (s.W+2*s.Pad-s.Kernel)/s.Stride + 1 }

// ShortcutShape describes an option-A shortcut from N×C×H×W to
// N×OC×⌈H/Stride⌉×⌈W/Stride⌉.
type ShortcutShape struct {
	N, C, H, W, OC, Stride int
}

// OutH is the output height.
func (s ShortcutShape) OutH() int { return (s.H-1)/s.Stride + 1 }

// OutW is the output width.
func (s ShortcutShape) OutW() int { return (s.W-1)/s.Stride + 1 }

// AdamParams are the hyper-parameters of one Adam update, PyTorch semantics
// (bias-corrected moments, L2 weight decay added to the gradient).
type AdamParams struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
	// Step is the 1-based count of updates, including this one.
	Step int
}

// SGDParams are the hyper-parameters of one SGD update, PyTorch semantics:
// g += wd·w; buf = momentum·buf + g; w -= lr·buf (buf starts at zero, so the
// first update uses g itself).
type SGDParams struct {
	LR, Momentum, WeightDecay float32
	Nesterov                  bool
}

// Backend is the set of ops layers are written against.
type Backend interface {
	// Name says which implementation and which compute path is active,
	// e.g. "cpu (gonum GEMM, 2 threads)".
	Name() string

	// Alloc returns a zero-filled tensor of n elements.
	Alloc(n int) Tensor
	// Free releases a tensor; using it afterwards is an error.
	Free(t Tensor)
	// Upload copies len(src) host values into the start of dst.
	Upload(dst Tensor, src []float32)
	// Download copies the first len(dst) values of src to the host. It waits
	// for queued work on src.
	Download(dst []float32, src Tensor)
	// Err returns the first error recorded since the backend was created.
	Err() error
	// Sync waits for all queued work and returns Err.
	Sync() error
	// Close releases every resource of the backend.
	Close() error

	// Fill sets the first n elements of t to v.
	Fill(t Tensor, v float32, n int)
	// Copy copies n elements from src to dst.
	Copy(dst, src Tensor, n int)

	// Gemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices,
	// where op(A) is m×k, op(B) is k×n and C is m×n. With trans, the stored
	// matrix is the transpose (A stored k×m, B stored n×k).
	Gemm(transA, transB bool, m, n, k int, alpha float32, a, b Tensor, beta float32, c Tensor)

	// AddBias adds bias[c] to every element of channel c of y, laid out
	// n×c×spatial (a Dense output is n×c×1).
	AddBias(y, bias Tensor, n, c, spatial int)
	// BiasGrad sets dBias[c] to the sum of dy over samples and positions.
	BiasGrad(dBias, dy Tensor, n, c, spatial int)

	// Conv2DForward sets y (N×OC×OH×OW) to the cross-correlation of x
	// (N×C×H×W) with w (OC×C×KH×KW), zero padding, no bias.
	Conv2DForward(y, x, w Tensor, s ConvShape)
	// Conv2DBackwardData sets dx to the gradient with respect to x.
	Conv2DBackwardData(dx, dy, w Tensor, s ConvShape)
	// Conv2DBackwardFilter sets dw to the gradient with respect to w.
	Conv2DBackwardFilter(dw, dy, x Tensor, s ConvShape)

	// MaxPool2DForward sets y to the window maxima of x and argmax to the
	// index within its H×W plane of each maximum (the first on ties).
	MaxPool2DForward(y, argmax, x Tensor, s PoolShape)
	// MaxPool2DBackward sets dx: dy routed to the argmax positions.
	MaxPool2DBackward(dx, dy, argmax Tensor, s PoolShape)
	// GlobalAvgPoolForward sets y[n, c] to the mean of x[n, c, :].
	GlobalAvgPoolForward(y, x Tensor, n, c, spatial int)
	// GlobalAvgPoolBackward sets dx[n, c, :] = dy[n, c] / spatial.
	GlobalAvgPoolBackward(dx, dy Tensor, n, c, spatial int)

	// Add sets y = a + b; y may be a or b.
	Add(y, a, b Tensor, n int)
	// ShortcutAForward is ResNet's parameter-free option-A shortcut:
	// y[n, o, i, j] = x[n, o−pad, i·stride, j·stride] where
	// pad = (OC−C)/2 and 0 ≤ o−pad < C, else 0.
	ShortcutAForward(y, x Tensor, s ShortcutShape)
	// ShortcutABackward sets dx from dy, the transpose of the forward map.
	ShortcutABackward(dx, dy Tensor, s ShortcutShape)

	// ReLUForward sets y = max(x, 0).
	ReLUForward(y, x Tensor, n int)
	// ReLUBackward sets dx = dy where y > 0, else 0 (y is the forward output).
	ReLUBackward(dx, dy, y Tensor, n int)

	// BatchNormTrain normalizes x with the batch statistics per channel,
	// y = gamma·xhat + beta, saves xhat and invStd (1/sqrt(var+eps), biased
	// variance) for the backward pass, saves the batch mean, and updates the
	// running statistics like PyTorch: running = (1−momentum)·running +
	// momentum·batch, with the unbiased variance for runVar.
	BatchNormTrain(y, xhat, mean, invStd, runMean, runVar, x, gamma, beta Tensor, s BNShape, momentum, eps float32)
	// BatchNormEval normalizes x with the running statistics.
	BatchNormEval(y, x, gamma, beta, runMean, runVar Tensor, s BNShape, eps float32)
	// BatchNormBackward sets dx, dGamma and dBeta from dy and the values saved
	// by BatchNormTrain.
	BatchNormBackward(dx, dGamma, dBeta, dy, xhat, invStd, gamma Tensor, s BNShape)

	// LogSoftmax sets each row of the rows×cols matrix y to log-softmax(x).
	LogSoftmax(y, x Tensor, rows, cols int)
	// NLLLoss accumulates into sums (three elements): sums[0] += Σ
	// −logp[r, label[r]], sums[1] += number of rows whose arg-max (first on
	// ties) equals the label, sums[2] += number of rows whose label is among
	// the five largest (fewer than five classes score strictly higher).
	NLLLoss(sums, logp, labels Tensor, rows, cols int)
	// LogSoftmaxNLLBackward sets dx = scale·(exp(logp) − onehot(label)), the
	// gradient of scale·Σ NLL(log-softmax(x)) with respect to x.
	LogSoftmaxNLLBackward(dx, logp, labels Tensor, rows, cols int, scale float32)

	// Sign sets dst = sign(src) with sign(0) = +1, so dst ∈ {−1, +1}. dst may
	// be src.
	Sign(dst, src Tensor, n int)
	// SignScaled sets each of rows rows of dst (rows×cols) to
	// mean(|src row|)·sign(src row): the per-output-channel scaled sign
	// (XNOR-Net's α·sign(W)).
	SignScaled(dst, src Tensor, rows, cols int)
	// STEClippedMask zeroes grad where |latent| > 1: the clipped
	// straight-through estimator applied to a gradient taken with respect to
	// sign(latent). (The identity estimator needs no op.)
	STEClippedMask(grad, latent Tensor, n int)
	// Clip limits t to [lo, hi].
	Clip(t Tensor, lo, hi float32, n int)

	// AdamStep updates w in place from gradient g and moment buffers m, v.
	AdamStep(w, g, m, v Tensor, n int, p AdamParams)
	// SGDStep updates w in place from gradient g and momentum buffer buf.
	SGDStep(w, g, buf Tensor, n int, p SGDParams)
}

// Fused is implemented by backends that run some pairs of ops as one pass
// over memory; layers use it when the backend has it. Each fused op gives
// the same values as its pair run one after the other.
type Fused interface {
	// BatchNormReLUTrain is BatchNormTrain followed by ReLUForward of y in
	// place, y = max(gamma·xhat + beta, 0), keeping no xhat.
	BatchNormReLUTrain(y, mean, invStd, runMean, runVar, x, gamma, beta Tensor, s BNShape, momentum, eps float32)
	// BatchNormReLUBackward is ReLUBackward of dy through the output of
	// BatchNormReLUTrain followed by BatchNormBackward, recomputing xhat and
	// the ReLU's mask from its input x, mean, invStd, gamma and beta; dy is
	// not changed.
	BatchNormReLUBackward(dx, dGamma, dBeta, dy, x, mean, invStd, gamma, beta Tensor, s BNShape)
	// AddReLU sets y = max(a + b, 0); y may be a or b.
	AddReLU(y, a, b Tensor, n int)
}

// FusedResidual is implemented by backends that also run the end of a
// residual block, batch norm then the shortcut added then ReLU, as one
// pass each way, and add the main path's input gradient to the
// shortcut's. Each op gives the same values as its unfused sequence.
type FusedResidual interface {
	Fused
	// BatchNormAddReLUTrain is BatchNormTrain of x followed by AddReLU with
	// skip: y = max(gamma·xhat + beta + skip, 0), keeping no xhat.
	BatchNormAddReLUTrain(y, mean, invStd, runMean, runVar, x, skip, gamma, beta Tensor, s BNShape, momentum, eps float32)
	// BatchNormAddReLUBackward is ReLUBackward of dy through y, the output
	// of BatchNormAddReLUTrain, into dSum (the gradient of the sum, which
	// the shortcut takes too), followed by BatchNormBackward of dSum into
	// dx, dGamma and dBeta, recomputing xhat from x, mean and invStd.
	BatchNormAddReLUBackward(dx, dGamma, dBeta, dSum, dy, y, x, mean, invStd, gamma Tensor, s BNShape)
	// Conv2DBackwardDataAdd adds the input gradient of a convolution to
	// dx, which holds the shortcut's: Conv2DBackwardData then Add, without
	// the gradient in between leaving the device's caches.
	Conv2DBackwardDataAdd(dx, dy, w Tensor, s ConvShape)
}

// Float64Host is implemented by backends that compute in float64 (the CPU
// backend's float64 variant, used by gradient checks); it moves float64
// values without rounding them to float32.
type Float64Host interface {
	Upload64(dst Tensor, src []float64)
	Download64(dst []float64, src Tensor)
}

// SizeError reports an op called with sizes its tensors cannot hold.
type SizeError struct {
	Op   string
	Need int
	Have int
	Arg  string
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("backend: %s: tensor %s holds %d elements, the op needs %d", e.Op, e.Arg, e.Have, e.Need)
}

// AsyncDownloader is implemented by backends that can copy a few values to
// the host without waiting for work queued after the copy. The trainer
// reads each step's loss sums this way one step late, so an asynchronous
// device never idles while the host prepares the next step.
type AsyncDownloader interface {
	// DownloadAsync queues a copy of src's first n values (at most
	// MaxAsyncDownload) into the backend's host slot (0 or 1), after the
	// work queued so far, and returns at once.
	DownloadAsync(slot int, src Tensor, n int)
	// WaitDownload waits for the copy last queued into slot, copies its
	// values into dst (len(dst) of them) and returns the first error
	// recorded by the work before the copy, as Sync does.
	WaitDownload(slot int, dst []float32) error
}

// MaxAsyncDownload is the most values one DownloadAsync copies.
const MaxAsyncDownload = 64

// LossScaler is implemented by backends whose precision needs dynamic loss
// scaling: the CUDA backend at precision fp16, whose format flushes
// gradients below 2^-24 to zero and overflows above 65504. Such a backend
// multiplies the loss gradient (LogSoftmaxNLLBackward) by a scale S it
// keeps on the device, so every gradient computed from it is S times the
// true one. AdamStep and SGDStep divide S back out, and change nothing in
// a step where a gradient given to CheckGradient was not finite; Adam's
// bias corrections count the steps applied (AdamParams.Step less the
// steps skipped since the state was set). This is
// PyTorch's GradScaler without its host synchronization: the optimizer
// calls CheckGradient for every gradient before a step's first update and
// EndStep after its last. A backend that wraps one (backend.Profile) must
// pass the interface on, or the steps go unchecked and the scale never
// changes.
type LossScaler interface {
	// ScalesLoss says whether the backend scales the loss at the
	// precision it runs; where it does not, the other methods do nothing
	// and LossScaleState is nil.
	ScalesLoss() bool
	// CheckGradient records on the device whether any of the first n
	// values of g is NaN or ±Inf.
	CheckGradient(g Tensor, n int)
	// EndStep adjusts the scale after a step's updates: halved after a
	// step with a non-finite gradient (which the updates skipped), doubled
	// after LossScaleGrowthInterval steps in a row without one.
	EndStep()
	// LossScaleState is the scaler's state, LossScaleStateLen values
	// indexed by the LossScale constants. The backend owns it (Free
	// ignores it); checkpoints download and upload it like any tensor.
	LossScaleState() Tensor
}

// DeviceTimer is a backend that can time its own work on the device
// without waiting for it (the CUDA backend: events queued on its stream),
// which Profile then uses instead of waiting after every op. StartSpan
// and EndSpan queue marks around the work queued between them; Spans
// waits for the device and returns the device time of each span since
// its last call, in order, and forgets them. A span's time is the
// device's from its start mark to its end mark, which run in the
// stream's order: the op's work, not the earlier work it queued behind,
// but including any time the device sat idle while the host was still
// queuing the op's work (a device that keeps up with the host shows
// launch overhead so).
type DeviceTimer interface {
	StartSpan()
	EndSpan()
	Spans() ([]time.Duration, error)
}

// ConvPlanner is a backend that chooses how each convolution runs (the
// CUDA backend: a cuDNN algorithm it timed, or the im2col path).
// ConvChoices lists the choices made so far, one per convolution shape,
// layout and direction, in a fixed order: what `iterbin bench --profile`
// prints below its table.
type ConvPlanner interface {
	ConvChoices() []ConvChoice
}

// ConvChoice is how one direction of one convolution runs: Op labels it
// as Profile labels the op (ConvLabel) that runs it alone (a
// Conv2DBackwardDataAdd's convolution is a Conv2DBackwardData), How says
// on what, e.g. "NHWC, cuDNN algorithm 1 (IMPLICIT_PRECOMP_GEMM), …".
type ConvChoice struct {
	Op, How string
}

// The values of LossScaler.LossScaleState.
const (
	LossScale        = 0 // S, a power of two
	LossScaleFound   = 1 // nonzero once a gradient of this step was not finite
	LossScaleGood    = 2 // steps in a row without a non-finite gradient
	LossScaleSkipped = 3 // steps skipped (not applied) since the state was set
	// LossScaleStateLen is the state's length.
	LossScaleStateLen = 4
)

// The dynamic loss scaling rule, PyTorch's GradScaler defaults: the scale
// starts at LossScaleInitial, halves after a step with a non-finite
// gradient and doubles after LossScaleGrowthInterval steps in a row
// without one.
const (
	LossScaleInitial        = 65536
	LossScaleGrowthInterval = 2000
)

// InitialLossScaleState is a LossScaler's state before its first step.
func InitialLossScaleState() []float32 {
	st := make([]float32, LossScaleStateLen)
	st[LossScale] = LossScaleInitial
	return st
}
