//go:build cuda

package cuda

// bf16 mixed precision (Options.Precision = "bf16"). Tensors stay float32:
// the Backend interface, latent weights, batch norm statistics, losses and
// optimizer state never change type. Only the operands of GEMMs and
// convolutions are rounded to bf16, each time an op runs, into the
// backend's bf16 scratch (halves), and multiplied on tensor cores with
// fp32 accumulation:
//
//	Gemm                 A, B → bf16; cublasGemmEx, C float32
//	convolutions, cuDNN  both inputs → bf16; cuDNN's bf16 configuration
//	                     (x, w, y all bf16, compute float); the bf16
//	                     output is widened to float32
//	convolutions, im2col the weights (or dy) → bf16, columns written as
//	                     bf16 by im2col_bf16; GemmEx into float32 (col2im
//	                     stays float32)
//
// The conversions are extra passes over the operands (one read of float32,
// one write of bf16 each): the price of keeping the interface float32.
// All of it runs on the backend's one stream, so one scratch serves every
// op in turn. With bf16 storage (Options.Layout nhwc-bf16, layout.go) the
// activations between convolutions are bf16 already: cuDNN reads them and
// writes its activation outputs as they are, and only filters (and
// float32 inputs, such as the input batch) are converted.

import (
	"math"

	"gorgonia.org/cu"

	"iterbin/backend"
)

// bf16Align keeps each bf16 operand 256-byte aligned in the scratch, as
// cuMemAlloc aligns buffers (tensor-core kernels want 16 bytes at least).
const bf16Align = 256

// off16 is p advanced by elems bf16 values.
func off16(p cu.DevicePtr, elems int) cu.DevicePtr { return p + cu.DevicePtr(2*elems) }

// bf16Scratch returns room for three bf16 operands of n1, n2 and n3
// values (0 for none: its pointer is then 0) in the backend's bf16
// scratch, grown as needed (geometrically: grow). The returned buffers
// are valid until the next call.
func (b *Backend) bf16Scratch(n1, n2, n3 int) (p1, p2, p3 cu.DevicePtr) {
	round := func(n int) int { return (2*n + bf16Align - 1) / bf16Align * bf16Align }
	need := round(n1) + round(n2) + round(n3)
	if b.err != nil || need == 0 {
		return 0, 0, 0
	}
	at := b.grow(&b.halves, &b.halvesSize, need, 1, math.MaxInt, "bf16 scratch")
	if at == 0 {
		return 0, 0, 0
	}
	carve := func(n int) cu.DevicePtr {
		if n == 0 {
			return 0
		}
		p := at
		at += cu.DevicePtr(round(n))
		return p
	}
	p1 = carve(n1)
	p2 = carve(n2)
	p3 = carve(n3)
	return p1, p2, p3
}

// toBF16 rounds n float32s at src to bf16 at dst (nearest even).
func (b *Backend) toBF16(dst, src cu.DevicePtr, n int) {
	b.launchN("f32_to_bf16", n, ptrArg(dst), ptrArg(src), intArg(n))
}

// fromBF16 widens n bf16 values at src to float32 at dst (exact).
func (b *Backend) fromBF16(dst, src cu.DevicePtr, n int) {
	b.launchN("bf16_to_f32", n, ptrArg(dst), ptrArg(src), intArg(n))
}

// gemmBF16 is Gemm at precision bf16: A (m×k) and B (k×n) rounded to bf16,
// C float32.
func (b *Backend) gemmBF16(transA, transB bool, m, n, k int, alpha float32, a, bb cu.DevicePtr, beta float32, c cu.DevicePtr) {
	a16, b16, _ := b.bf16Scratch(m*k, k*n, 0)
	if b.err != nil {
		return
	}
	b.toBF16(a16, a, m*k)
	b.toBF16(b16, bb, k*n)
	if b.err == nil {
		b.fail(b.blas.gemmBF16(transA, transB, m, n, k, alpha, uintptr(a16), uintptr(b16), beta, uintptr(c)))
	}
}

// dnnOperandSizes are the element counts of direction dir's inputs and
// output, in dnnDirection's order.
func dnnOperandSizes(dir dnnDirection, s backend.ConvShape) (in1, in2, out int) {
	x, y, w := s.N*s.C*s.H*s.W, s.N*s.OC*s.OutH()*s.OutW(), s.OC*s.C*s.KH*s.KW
	switch dir {
	case dnnForward:
		return x, w, y
	case dnnBackwardData:
		return w, y, x
	}
	return x, y, w
}

// im2colBF16 writes the columns of cnt samples at x as bf16.
func (b *Backend) im2colBF16(cols, x cu.DevicePtr, s backend.ConvShape, cnt int) {
	b.launchN("im2col_bf16", cnt*s.C*s.KH*s.KW*s.OutH()*s.OutW(), ptrArg(cols), ptrArg(x), intArg(cnt), intArg(s.C), intArg(s.H), intArg(s.W),
		intArg(s.KH), intArg(s.KW), intArg(s.Stride), intArg(s.Pad), intArg(s.OutH()), intArg(s.OutW()))
}

// columnsBF16 makes the bf16 columns of cnt samples at x: im2col, or for
// a pointwise convolution (whose columns are the input itself) a plain
// conversion.
func (b *Backend) columnsBF16(cols, x cu.DevicePtr, s backend.ConvShape, cnt int) {
	if pointwise(s) {
		b.toBF16(cols, x, cnt*s.C*s.H*s.W)
		return
	}
	b.im2colBF16(cols, x, s, cnt)
}

// conv2DForwardBF16 is Conv2DForward's im2col path at precision bf16:
// y[n] = bf16(W)·bf16(cols[n]), float32 y.
func (b *Backend) conv2DForwardBF16(y, x, w cu.DevicePtr, s backend.ConvShape) {
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	chunk := convChunk(s)
	w16, cols16, _ := b.bf16Scratch(s.OC*k, chunk*k*p, 0)
	if b.err != nil {
		return
	}
	b.toBF16(w16, w, s.OC*k)
	for n0 := 0; n0 < s.N && b.err == nil; n0 += chunk {
		cnt := min(chunk, s.N-n0)
		b.columnsBF16(cols16, off(x, n0*in), s, cnt)
		if b.err != nil {
			return
		}
		b.fail(b.blas.gemmStridedBF16(false, false, s.OC, p, k, 1, uintptr(w16), 0, uintptr(cols16), k*p, 0, uintptr(off(y, n0*out)), out, cnt))
	}
}

// conv2DBackwardDataBF16 is Conv2DBackwardData's im2col path at precision
// bf16: cols[n] = bf16(W)ᵀ·bf16(dy[n]) in float32, then col2im.
func (b *Backend) conv2DBackwardDataBF16(dx, dy, w cu.DevicePtr, s backend.ConvShape) {
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	chunk := convChunk(s)
	w16, dy16, _ := b.bf16Scratch(s.OC*k, chunk*out, 0)
	if b.err != nil {
		return
	}
	b.toBF16(w16, w, s.OC*k)
	for n0 := 0; n0 < s.N && b.err == nil; n0 += chunk {
		cnt := min(chunk, s.N-n0)
		b.toBF16(dy16, off(dy, n0*out), cnt*out)
		if pointwise(s) {
			b.fail(b.blas.gemmStridedBF16(true, false, k, p, s.OC, 1, uintptr(w16), 0, uintptr(dy16), out, 0, uintptr(off(dx, n0*in)), in, cnt))
			continue
		}
		cols := b.scratch(chunk * k * p)
		if cols == 0 || b.err != nil {
			return
		}
		b.fail(b.blas.gemmStridedBF16(true, false, k, p, s.OC, 1, uintptr(w16), 0, uintptr(dy16), out, 0, uintptr(cols), k*p, cnt))
		b.launchN("col2im_f32", cnt*in, ptrArg(off(dx, n0*in)), ptrArg(cols), intArg(cnt), intArg(s.C), intArg(s.H), intArg(s.W),
			intArg(s.KH), intArg(s.KW), intArg(s.Stride), intArg(s.Pad), intArg(s.OutH()), intArg(s.OutW()))
	}
}

// conv2DBackwardFilterBF16 is Conv2DBackwardFilter's im2col path at
// precision bf16: dw = Σ_n bf16(dy[n])·bf16(cols[n])ᵀ, one GEMM per sample
// accumulating in float32 in sample order.
func (b *Backend) conv2DBackwardFilterBF16(dw, dy, x cu.DevicePtr, s backend.ConvShape) {
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	chunk := convChunk(s)
	dy16, cols16, _ := b.bf16Scratch(chunk*out, chunk*k*p, 0)
	if b.err != nil {
		return
	}
	for n0 := 0; n0 < s.N && b.err == nil; n0 += chunk {
		cnt := min(chunk, s.N-n0)
		b.toBF16(dy16, off(dy, n0*out), cnt*out)
		b.columnsBF16(cols16, off(x, n0*in), s, cnt)
		for i := 0; i < cnt && b.err == nil; i++ {
			beta := float32(1)
			if n0+i == 0 {
				beta = 0
			}
			b.fail(b.blas.gemmBF16(false, true, s.OC, k, p, 1, uintptr(off16(dy16, i*out)), uintptr(off16(cols16, i*k*p)), beta, uintptr(dw)))
		}
	}
}
