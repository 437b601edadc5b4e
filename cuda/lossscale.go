//go:build cuda

package cuda

// Dynamic loss scaling at precision fp16 (backend.LossScaler). fp16's
// five exponent bits flush gradients below 2^-24 to zero and overflow
// above 65504, so the loss gradient is multiplied by a scale S that keeps
// the gradients flowing back through fp16 GEMM and convolution operands
// inside that range; the optimizer updates divide it back out. The state
// (the scale, a flag, the good-step run and the skipped count;
// kernels/lossscale.cuh) lives in one device tensor. Within a step only
// kernels read and change it: log_softmax_nll_bwd_f32 scales the loss
// gradient, loss_scale_check_f32 flags non-finite gradients, adam_f32 and
// sgd_f32 unscale them or skip the step, and loss_scale_update_f32
// adjusts S. No step waits for the host; the trainer sets the state when
// it makes an optimizer, checkpoints it, and reads it with its metrics.

import (
	"fmt"

	"gorgonia.org/cu"

	"iterbin/backend"
)

var _ backend.LossScaler = (*Backend)(nil)

// openLossScale allocates the scaler's state at precision fp16: scale
// backend.LossScaleInitial, no flag, no steps counted.
func (b *Backend) openLossScale() error {
	if b.precision != FP16 {
		return nil
	}
	t := b.Alloc(backend.LossScaleStateLen).(*tensor)
	b.Upload(t, backend.InitialLossScaleState())
	if err := b.Sync(); err != nil {
		return err
	}
	b.lossScale = t
	return nil
}

// lossScalePtr is the scaler's state for the kernels, 0 (none) unless the
// precision is fp16.
func (b *Backend) lossScalePtr() cu.DevicePtr {
	if b.lossScale == nil {
		return 0
	}
	return b.lossScale.ptr
}

// describeLossScale says, for Name, how fp16 scales the loss.
func (b *Backend) describeLossScale() string {
	if b.lossScale == nil {
		return ""
	}
	return fmt.Sprintf("; dynamic loss scaling (scale %d at the start, halved after a step with a non-finite gradient, which is skipped, doubled after %d good steps)",
		backend.LossScaleInitial, backend.LossScaleGrowthInterval)
}

// ScalesLoss says whether the precision is fp16, whose loss is scaled.
func (b *Backend) ScalesLoss() bool { return b.lossScale != nil }

// CheckGradient flags the step when one of g's first n values is not
// finite. It reads the buffer as it is: the order of a channels-last
// gradient does not matter to the check.
func (b *Backend) CheckGradient(gt backend.Tensor, n int) {
	g := b.tensorArg("CheckGradient", "g", gt, n)
	if g == nil || b.lossScale == nil || g.ptr == 0 {
		return
	}
	if g.lay.half.on() {
		b.fail(fmt.Errorf("cuda: internal error: CheckGradient of a tensor stored as %s", g.lay.half))
		return
	}
	b.launchN("loss_scale_check_f32", n, ptrArg(b.lossScalePtr()), ptrArg(g.ptr), intArg(n))
}

// EndStep adjusts the scale (one thread).
func (b *Backend) EndStep() {
	if b.lossScale != nil && b.err == nil {
		b.launch("loss_scale_update_f32", 1, 1, 0, ptrArg(b.lossScalePtr()), intArg(backend.LossScaleGrowthInterval))
	}
}

// LossScaleState is the scaler's state tensor; nil unless the precision
// is fp16.
func (b *Backend) LossScaleState() backend.Tensor {
	if b.lossScale == nil {
		return nil
	}
	return b.lossScale
}
