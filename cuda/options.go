package cuda

import "fmt"

// Options tune a CUDA backend.
type Options struct {
	// Precision is how GEMMs and convolutions compute; "" means fp32.
	// Everything else (tensors, batch norm, losses, optimizer state) is
	// float32 at every precision, except the activations Layout stores in
	// 16 bits ("nhwc-bf16", "nhwc-fp16", and "auto" at bf16 and fp16).
	//
	//   - "fp32": true fp32. cuBLAS in CUBLAS_DEFAULT_MATH (SGEMM never
	//     uses TF32 there), cuDNN convolutions in CUDNN_FMA_MATH.
	//   - "tf32": TF32 tensor cores for float32 data: cuBLAS in
	//     CUBLAS_TF32_TENSOR_OP_MATH, cuDNN in CUDNN_TENSOR_OP_MATH
	//     (operands rounded to 10 mantissa bits, fp32 accumulation).
	//   - "bf16": mixed precision. The two operands of every GEMM and
	//     convolution are rounded to bf16 (round to nearest even) into
	//     scratch buffers and multiplied on tensor cores with fp32
	//     accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F). GEMM outputs,
	//     and convolution outputs on the im2col path, are float32; cuDNN's
	//     bf16 convolutions write bf16 (cuDNN has no bf16-in, float-out
	//     configuration), which is kept where the layout stores
	//     activations in bf16 and widened back to float32 otherwise.
	//     Binary weights (±1) are exact in bf16.
	//   - "fp16": mixed precision as bf16, in IEEE half precision: three
	//     more mantissa bits, five exponent bits. Its range needs dynamic
	//     loss scaling (backend.LossScaler, lossscale.go), which the
	//     trainer's optimizer drives. Binary weights (±1) are exact.
	Precision string
	// NoCuDNN keeps convolutions on im2col + cuBLAS GEMMs even where cuDNN
	// loads (by default cuDNN runs them when libcudnn.so.9 or .so.8 is
	// found); tests use it to compare the two paths. Builds without the
	// cuda tag ignore it.
	NoCuDNN bool
	// CuDNNOnly runs every convolution cuDNN supports on cuDNN. By default
	// each direction of each shape is also timed once on the im2col path,
	// which then runs it where it was faster (Name counts those); tests of
	// the cuDNN path set CuDNNOnly so that cuDNN is what they check.
	CuDNNOnly bool
	// Layout is the order convolutional activations are stored in on the
	// device, and their format (layout.go). The orders give the same
	// results up to the rounding of the algorithms cuDNN picks; a 16-bit
	// format adds a rounding of each activation and gradient.
	//
	//   - "" or "auto": channels-last where cuDNN runs the convolutions on
	//     tensor cores (precision tf32, bf16 or fp16), else NCHW, and at
	//     bf16 and fp16 the activations stored in that format, as
	//     "nhwc-bf16" and "nhwc-fp16" do (with their limits: at fp16 a
	//     forward activation beyond 65504 overflows): on an H100 that made
	//     ResNet-18 steps 1.6 times as fast at bf16, 1.7 at fp16, as
	//     float32 activations (docs/gpu/2026-11-28). Strict fp32
	//     convolutions gain little from NHWC and are not certain to have
	//     cuDNN kernels in it for every direction.
	//   - "nhwc": channels-last (NHWC), where cuDNN's tensor-core
	//     convolutions are fastest. Without cuDNN it cannot be (the
	//     im2col path is NCHW) and Name says so.
	//   - "nchw": NCHW throughout, the Backend interface's own order.
	//   - "nhwc-bf16" (precision bf16 only): channels-last, and the
	//     activations between convolutions and their gradients stored as
	//     bf16 (layout.go), as PyTorch's autocast keeps them: half the
	//     memory traffic of batch norm, ReLU, pooling and the residual
	//     adds, and no conversion passes around cuDNN's bf16
	//     convolutions. Results then differ from "nhwc" by bf16 rounding
	//     of those activations; weights, statistics and optimizer state
	//     stay float32.
	//   - "nhwc-fp16" (precision fp16 only): the same in fp16, as
	//     PyTorch's autocast keeps activations at fp16. Their gradients
	//     carry the loss scale, so one beyond fp16's range (65504) becomes
	//     Inf, reaches the weight gradients and skips the step, as any
	//     overflow at fp16 does; a forward activation beyond it does too,
	//     and lowering the scale does not help that one.
	Layout string
}

// The values of Options.Layout.
const (
	LayoutAuto = "auto"
	NHWC       = "nhwc"
	NCHW       = "nchw"
	NHWCBF16   = "nhwc-bf16"
	NHWCFP16   = "nhwc-fp16"
)

// CheckLayout says whether l is a value of Options.Layout ("" is auto)
// and, if not, what is allowed.
func CheckLayout(l string) error {
	switch l {
	case "", LayoutAuto, NHWC, NCHW, NHWCBF16, NHWCFP16:
		return nil
	}
	return fmt.Errorf("layout %q is not known; use %s, %s, %s, %s (precision %s) or %s (precision %s)", l, LayoutAuto, NHWC, NCHW, NHWCBF16, BF16, NHWCFP16, FP16)
}

// The values of Options.Precision.
const (
	FP32 = "fp32"
	TF32 = "tf32"
	BF16 = "bf16"
	FP16 = "fp16"
)

// CheckPrecision says whether p is a value of Options.Precision ("" is
// fp32) and, if not, what is allowed.
func CheckPrecision(p string) error {
	switch p {
	case "", FP32, TF32, BF16, FP16:
		return nil
	}
	return fmt.Errorf("precision %q is not known; use %s, %s, %s or %s", p, FP32, TF32, BF16, FP16)
}

// precision returns the checked precision, "" resolved to fp32.
func (o Options) precision() (string, error) {
	if err := CheckPrecision(o.Precision); err != nil {
		return "", fmt.Errorf("cuda: Options.Precision: %w", err)
	}
	if o.Precision == "" {
		return FP32, nil
	}
	return o.Precision, nil
}

// StorageFormat is the 16-bit format layout l names for activations,
// "bf16" or "fp16", and "" for the others: nhwc and nchw keep them
// float32, and auto's depends on the precision (16-bit at bf16 and fp16).
func StorageFormat(l string) string {
	switch l {
	case NHWCBF16:
		return BF16
	case NHWCFP16:
		return FP16
	}
	return ""
}

// layout returns the checked layout, "" resolved to auto; nhwc-bf16
// needs precision bf16, nhwc-fp16 precision fp16.
func (o Options) layout() (string, error) {
	if err := CheckLayout(o.Layout); err != nil {
		return "", fmt.Errorf("cuda: Options.Layout: %w", err)
	}
	if f, p := StorageFormat(o.Layout), o.Precision; f != "" && p != f {
		if p == "" {
			p = FP32
		}
		return "", fmt.Errorf("cuda: Options.Layout: %q stores activations as %s, which needs precision %q, not %q", o.Layout, f, f, p)
	}
	if o.Layout == "" {
		return LayoutAuto, nil
	}
	return o.Layout, nil
}
