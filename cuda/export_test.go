//go:build cuda

package cuda

// Test hooks: the cuda_test package reads the backend's cuDNN plans
// through these.

import (
	"fmt"

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

// TensorLayout says in which order a CUDA tensor's first elements are
// stored: "flat", or "NHWC n×c×s" for an n×c×s activation.
func TensorLayout(t backend.Tensor) string {
	ct, ok := t.(*tensor)
	switch {
	case !ok:
		return fmt.Sprintf("not a CUDA tensor (%T)", t)
	case ct.lay.nhwc:
		return fmt.Sprintf("NHWC %d×%d×%d", ct.lay.n, ct.lay.c, ct.lay.s)
	}
	return "flat"
}
