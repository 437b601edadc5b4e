//go:build cuda

package cuda

// Test hooks: the cuda_test package reads the backend's cuDNN plans
// through these.

import (
	"fmt"

	"gorgonia.org/cu"

	"iterbin/backend"
)

// ConvPlan says how one direction of a convolution runs on cuDNN.
type ConvPlan = convPlan

// ConvPlans returns the plans cuDNN made for convolution s on gpu, one per
// direction (forward, backward data, backward filter); nil where cuDNN did
// not see s or is not loaded.
func ConvPlans(gpu backend.Backend, s backend.ConvShape) []ConvPlan {
	return gpu.(*Backend).convPlans(s)
}

// ConvAlgoName is cuDNN's short name of algorithm algo of direction dir
// (0 forward, 1 backward data, 2 backward filter), as ConvChoices gives it.
func ConvAlgoName(dir, algo int) string { return enumName(dnnAlgoNames[dir], algo) }

// ConvAccumulations is how many convolutions on gpu added their output
// to their output tensor in place (16-bit storage's Conv2DBackwardDataAdd).
func ConvAccumulations(gpu backend.Backend) int {
	if b := gpu.(*Backend); b.dnn != nil {
		return b.dnn.accumulated
	}
	return 0
}

// ConvFallbacks is how many convolution directions run on im2col on gpu
// because cuDNN does not support them, and why the first does.
func ConvFallbacks(gpu backend.Backend) (int, string) { return gpu.(*Backend).convFallbacks() }

// CudnnRunsBF16 says whether cuDNN on gpu certainly runs bf16
// convolutions whose channel counts (C and OC) are multiples of 8, and
// why (not): that needs bf16 tensor cores (compute capability 8.0, Ampere,
// or newer) and, to be sure, cuDNN 9, whose legacy convolution API takes
// CUDNN_DATA_BFLOAT16 NCHW tensors there. Later cuDNN 8 releases may too,
// but not certainly every one, so the tests assert nothing about them.
func CudnnRunsBF16(gpu backend.Backend) (bool, string) {
	b := gpu.(*Backend)
	if b.dnn == nil {
		return false, "cuDNN is not loaded"
	}
	major, minor, err := b.device.ComputeCapability()
	if err != nil {
		return false, "compute capability: " + err.Error()
	}
	sm := fmt.Sprintf("compute capability %d.%d, cuDNN %s", major, minor, b.dnn.version)
	return major >= 8 && b.dnn.major >= 9, sm
}

// ToChannelsLast stores t, an n×c×s activation of the CUDA backend be,
// channels-last (NHWC), as an op that reads it so would; on other
// backends it does nothing.
func ToChannelsLast(be backend.Backend, t backend.Tensor, n, c, s int) {
	if b, ok := be.(*Backend); ok {
		if ct := b.tensorArg("ToChannelsLast", "t", t, n*c*s); ct != nil {
			b.arrange(ct, nhwcLayout(n, c, s))
		}
	}
}

// ToChannelsLastHalf stores t, an n×c×s activation of the CUDA backend
// be, channels-last in its precision's 16-bit format, as an op at 16-bit
// storage would write it: rounded to nearest even, so tests give it
// values the format holds exactly (the backend itself never rounds a
// tensor in place). On other backends it does nothing.
func ToChannelsLastHalf(be backend.Backend, t backend.Tensor, n, c, s int) {
	b, ok := be.(*Backend)
	if !ok {
		return
	}
	if !b.half.on() {
		b.fail(fmt.Errorf("cuda: ToChannelsLastHalf at precision %s, which has no 16-bit format", b.precision))
		return
	}
	ct := b.tensorArg("ToChannelsLastHalf", "t", t, n*c*s)
	lay := nhwcLayout(n, c, s)
	if ct == nil || !lay.nhwc || b.arrange(ct, lay) == 0 {
		return
	}
	cnt := lay.count()
	tmp := b.grow(&b.layoutScratch, &b.layoutScratchSize, cnt, 4, maxLaunchN, "layout scratch")
	if tmp == 0 {
		return
	}
	b.toHalf(tmp, ct.ptr, cnt)
	if err := cu.MemcpyDtoDAsync(ct.ptr, tmp, int64(2*cnt), b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: cuMemcpyDtoDAsync: %v", err))
		return
	}
	ct.lay = lay.inHalf(b.half)
}

// TensorLayout says in which order, and as what, a CUDA tensor's first
// elements are stored: "flat", "NHWC n×c×s", "NHWC bf16 n×c×s" or
// "NHWC fp16 n×c×s" for an n×c×s activation.
func TensorLayout(t backend.Tensor) string {
	ct, ok := t.(*tensor)
	if !ok {
		return fmt.Sprintf("not a CUDA tensor (%T)", t)
	}
	return ct.lay.String()
}
