//go:build cuda

package cuda

// Mixed precision (Options.Precision "bf16" and "fp16"). Tensors stay
// float32: the Backend interface, latent weights, batch norm statistics,
// losses and optimizer state never change type. Only the operands of
// GEMMs and convolutions are rounded to the precision's 16-bit format
// (halfFormat), each time an op runs, into the backend's scratch
// (halves), and multiplied on tensor cores with fp32 accumulation:
//
//	Gemm                 A, B → 16-bit; cublasGemmEx, C float32
//	convolutions, cuDNN  both inputs → 16-bit; cuDNN's 16-bit
//	                     configuration (x, w, y all 16-bit, compute
//	                     float); the 16-bit output is widened to float32
//	convolutions, im2col the weights (or dy) → 16-bit, columns written as
//	                     16-bit by im2col_bf16 or im2col_f16; GemmEx into
//	                     float32 (col2im stays float32)
//
// The conversions are extra passes over the operands (one read of float32,
// one write of 16-bit each): the price of keeping the interface float32.
// All of it runs on the backend's one stream, so one scratch serves every
// op in turn. With 16-bit storage (layout.go) the activations between convolutions are 16-bit
// already: cuDNN reads them and writes its activation outputs as they
// are, and only filters (and float32 inputs, such as the input batch) are
// converted.
//
// fp16 has three more mantissa bits than bf16 but five exponent bits to
// its eight, so small gradients flush to zero and large ones overflow: at
// fp16 the backend scales the loss (lossscale.go). cuDNN's fp16 filter
// gradients are fp16 too, as under PyTorch's autocast; an overflow there
// skips the step like any other.

import (
	"math"

	"gorgonia.org/cu"

	"iterbin/backend"
)

// dnnType is the format's cudnnDataType_t.
func (h halfFormat) dnnType() dnnDataType {
	if h == FP16 {
		return dnnHalf
	}
	return dnnBFloat16
}

// halfAlign keeps each 16-bit operand 256-byte aligned in the scratch, as
// cuMemAlloc aligns buffers (tensor-core kernels want 16 bytes at least).
const halfAlign = 256

// off16 is p advanced by elems 16-bit values.
func off16(p cu.DevicePtr, elems int) cu.DevicePtr { return p + cu.DevicePtr(2*elems) }

// halfScratch returns room for three 16-bit operands of n1, n2 and n3
// values (0 for none: its pointer is then 0) in the backend's 16-bit
// scratch, grown as needed (geometrically: grow). The returned buffers
// are valid until the next call.
func (b *Backend) halfScratch(n1, n2, n3 int) (p1, p2, p3 cu.DevicePtr) {
	round := func(n int) int { return (2*n + halfAlign - 1) / halfAlign * halfAlign }
	need := round(n1) + round(n2) + round(n3)
	if b.err != nil || need == 0 {
		return 0, 0, 0
	}
	at := b.grow(&b.halves, &b.halvesSize, need, 1, math.MaxInt, "16-bit scratch")
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

// toHalf rounds n float32s at src to the precision's 16-bit format at dst
// (nearest even; ±Inf beyond fp16's range).
func (b *Backend) toHalf(dst, src cu.DevicePtr, n int) {
	if b.half == FP16 {
		b.launchN("f32_to_f16", n, ptrArg(dst), ptrArg(src), intArg(n))
		return
	}
	b.toBF16(dst, src, n)
}

// fromHalf widens n values of the precision's 16-bit format at src to
// float32 at dst (exact).
func (b *Backend) fromHalf(dst, src cu.DevicePtr, n int) { b.widen(b.half, dst, src, n) }

// widen widens n values of 16-bit format h at src to float32 at dst
// (exact).
func (b *Backend) widen(h halfFormat, dst, src cu.DevicePtr, n int) {
	if h == FP16 {
		b.launchN("f16_to_f32", n, ptrArg(dst), ptrArg(src), intArg(n))
		return
	}
	b.fromBF16(dst, src, n)
}

// gemmHalf is Gemm at a 16-bit precision: A (m×k) and B (k×n) rounded to
// the 16-bit format, C float32.
func (b *Backend) gemmHalf(transA, transB bool, m, n, k int, alpha float32, a, bb cu.DevicePtr, beta float32, c cu.DevicePtr) {
	a16, b16, _ := b.halfScratch(m*k, k*n, 0)
	if b.err != nil {
		return
	}
	b.toHalf(a16, a, m*k)
	b.toHalf(b16, bb, k*n)
	if b.err == nil {
		b.fail(b.blas.gemmHalf(transA, transB, m, n, k, alpha, uintptr(a16), uintptr(b16), beta, uintptr(c)))
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

// im2colHalf writes the columns of cnt samples at x in the 16-bit format.
func (b *Backend) im2colHalf(cols, x cu.DevicePtr, s backend.ConvShape, cnt int) {
	kernel := "im2col_bf16"
	if b.half == FP16 {
		kernel = "im2col_f16"
	}
	b.launchN(kernel, cnt*s.C*s.KH*s.KW*s.OutH()*s.OutW(), ptrArg(cols), ptrArg(x), intArg(cnt), intArg(s.C), intArg(s.H), intArg(s.W),
		intArg(s.KH), intArg(s.KW), intArg(s.Stride), intArg(s.Pad), intArg(s.OutH()), intArg(s.OutW()))
}

// columnsHalf makes the 16-bit columns of cnt samples at x: im2col, or for
// a pointwise convolution (whose columns are the input itself) a plain
// conversion.
func (b *Backend) columnsHalf(cols, x cu.DevicePtr, s backend.ConvShape, cnt int) {
	if pointwise(s) {
		b.toHalf(cols, x, cnt*s.C*s.H*s.W)
		return
	}
	b.im2colHalf(cols, x, s, cnt)
}

// conv2DForwardHalf is Conv2DForward's im2col path at a 16-bit
// precision: y[n] = h(W)·h(cols[n]) with h the rounding to the 16-bit
// format, float32 y.
func (b *Backend) conv2DForwardHalf(y, x, w cu.DevicePtr, s backend.ConvShape) {
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	chunk := convChunk(s)
	w16, cols16, _ := b.halfScratch(s.OC*k, chunk*k*p, 0)
	if b.err != nil {
		return
	}
	b.toHalf(w16, w, s.OC*k)
	for n0 := 0; n0 < s.N && b.err == nil; n0 += chunk {
		cnt := min(chunk, s.N-n0)
		b.columnsHalf(cols16, off(x, n0*in), s, cnt)
		if b.err != nil {
			return
		}
		b.fail(b.blas.gemmStridedHalf(false, false, s.OC, p, k, 1, uintptr(w16), 0, uintptr(cols16), k*p, 0, uintptr(off(y, n0*out)), out, cnt))
	}
}

// conv2DBackwardDataHalf is Conv2DBackwardData's im2col path at a 16-bit
// precision: cols[n] = h(W)ᵀ·h(dy[n]) in float32, then col2im.
func (b *Backend) conv2DBackwardDataHalf(dx, dy, w cu.DevicePtr, s backend.ConvShape) {
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	chunk := convChunk(s)
	w16, dy16, _ := b.halfScratch(s.OC*k, chunk*out, 0)
	if b.err != nil {
		return
	}
	b.toHalf(w16, w, s.OC*k)
	for n0 := 0; n0 < s.N && b.err == nil; n0 += chunk {
		cnt := min(chunk, s.N-n0)
		b.toHalf(dy16, off(dy, n0*out), cnt*out)
		if pointwise(s) {
			b.fail(b.blas.gemmStridedHalf(true, false, k, p, s.OC, 1, uintptr(w16), 0, uintptr(dy16), out, 0, uintptr(off(dx, n0*in)), in, cnt))
			continue
		}
		cols := b.scratch(chunk * k * p)
		if cols == 0 || b.err != nil {
			return
		}
		b.fail(b.blas.gemmStridedHalf(true, false, k, p, s.OC, 1, uintptr(w16), 0, uintptr(dy16), out, 0, uintptr(cols), k*p, cnt))
		b.launchN("col2im_f32", cnt*in, ptrArg(off(dx, n0*in)), ptrArg(cols), intArg(cnt), intArg(s.C), intArg(s.H), intArg(s.W),
			intArg(s.KH), intArg(s.KW), intArg(s.Stride), intArg(s.Pad), intArg(s.OutH()), intArg(s.OutW()))
	}
}

// conv2DBackwardFilterHalf is Conv2DBackwardFilter's im2col path at a
// 16-bit precision: dw = Σ_n h(dy[n])·h(cols[n])ᵀ, one GEMM per sample
// accumulating in float32 in sample order.
func (b *Backend) conv2DBackwardFilterHalf(dw, dy, x cu.DevicePtr, s backend.ConvShape) {
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	chunk := convChunk(s)
	dy16, cols16, _ := b.halfScratch(chunk*out, chunk*k*p, 0)
	if b.err != nil {
		return
	}
	for n0 := 0; n0 < s.N && b.err == nil; n0 += chunk {
		cnt := min(chunk, s.N-n0)
		b.toHalf(dy16, off(dy, n0*out), cnt*out)
		b.columnsHalf(cols16, off(x, n0*in), s, cnt)
		for i := 0; i < cnt && b.err == nil; i++ {
			beta := float32(1)
			if n0+i == 0 {
				beta = 0
			}
			b.fail(b.blas.gemmHalf(false, true, s.OC, k, p, 1, uintptr(off16(dy16, i*out)), uintptr(off16(cols16, i*k*p)), beta, uintptr(dw)))
		}
	}
}
