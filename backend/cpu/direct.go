package cpu

import "iterbin/backend"

// Channels-last filter gradients, on processors with AVX-512. The input
// is copied zero-padded with channels innermost ([n][h+2p][w+2p][c]) and
// the output gradient with channels innermost ([n][oh][ow][oc]); then a
// tile of 8 input by 16 output channels of one tap, dw[kh,kw][c0:c0+8]
// [o0:o0+16], is a sum over every output position of every sample of 8
// broadcast input values times a 16-wide vector of the output gradient:
// no padded positions are computed, nothing is packed, and every tile
// stays in registers along a run of positions. Tiles are split between
// the workers; each sums its own over samples in order.
//
// Strides and non-square kernels only change where a tap's input run
// starts and how far apart its positions are, so every shape with the
// right channel counts takes this path.
//
// The channels-last copies are 16×16 block transposes in registers; with
// element-by-element copies the direct path lost to the AVX2 dot kernel
// (filtergrad.go) on 32×32 planes, with them it is 1.1–1.9× faster on
// every stride-1 layer of VGG-5 and ResNet-20.
//
// It takes input channels in multiples of 8 and output channels in
// multiples of 16. A channels-last forward kernel (8
// positions × 16 output channels) was measured too and lost to the
// implicit GEMM (kernel8x16OffsetsAVX512) on every layer of VGG-5 and
// ResNet-20, so forward and input gradients stay on that.

const (
	directRows = 8  // input channels per tile
	directCols = 16 // output channels per tile
	// directFilterChunk is about how many output positions one
	// filter-gradient kernel call covers.
	directFilterChunk = 128
)

// directKernels are the channels-last kernels.
type directKernels struct {
	// transpose does what transposeGo does for 16×16 blocks.
	transpose func(dst []float32, ldd int, src []float32, lds int)
	// filter does what filterGo does.
	filter func(rows, cols int, x []float32, xRow, xCol int, dy []float32, dyRow, dyCol int, acc []float32)
}

// filterGo is the portable reference of the filter-gradient kernel:
// acc[r·16+j] += Σ_i Σ_q x[i·xRow + q·xCol + r]·dy[i·dyRow + q·dyCol + j],
// in (i, q) order.
func filterGo(rows, cols int, x []float32, xRow, xCol int, dy []float32, dyRow, dyCol int, acc []float32) {
	for i := 0; i < rows; i++ {
		for q := 0; q < cols; q++ {
			xs, ds := x[i*xRow+q*xCol:][:directRows], dy[i*dyRow+q*dyCol:][:directCols]
			for r, xv := range xs {
				row := acc[r*directCols:][:directCols]
				for j, v := range ds {
					row[j] += xv * v
				}
			}
		}
	}
}

// directFilterOK says whether a convolution's filter gradient runs on the
// direct path.
func (b *Backend[T]) directFilterOK(s backend.ConvShape) bool {
	return b.direct != nil && convOK(s) && s.C%directRows == 0 && s.OC%directCols == 0
}

// transposeGo is the reference of the block transpose: dst[j·ldd+i] =
// src[i·lds+j] for i, j < 16.
func transposeGo(dst []float32, ldd int, src []float32, lds int) {
	for i := 0; i < 16; i++ {
		for j, v := range src[i*lds:][:16] {
			dst[j*ldd+i] = v
		}
	}
}

// transposeRows sets dst[q·ldd + r] = src[r·lds + q] for r < rows and
// q < cols, in 16×16 blocks where both sides allow and element by element
// at the edges.
func transposeRows(t func(dst []float32, ldd int, src []float32, lds int), dst []float32, ldd int, src []float32, lds, rows, cols int) {
	r16, q16 := rows/16*16, cols/16*16
	for r := 0; r < r16; r += 16 {
		for q := 0; q < q16; q += 16 {
			t(dst[q*ldd+r:], ldd, src[r*lds+q:], lds)
		}
	}
	for r := 0; r < rows; r++ {
		q0 := q16
		if r >= r16 {
			q0 = 0
		}
		for q, v := range src[r*lds+q0 : r*lds+cols] {
			dst[(q0+q)*ldd+r] = v
		}
	}
}

// padChannelsLast zero-fills xp and copies the cin×h×w sample x into it
// as [h+2·pad][w+2·pad][cin]: each row of the sample is a cin×w block
// transposed into w×cin.
func padChannelsLast(t func(dst []float32, ldd int, src []float32, lds int), xp, x []float32, cin, h, w, pad int) {
	clear(xp)
	wp := w + 2*pad
	for r := 0; r < h; r++ {
		transposeRows(t, xp[((r+pad)*wp+pad)*cin:], cin, x[r*w:], h*w, cin, w)
	}
}

// directFilterPrep writes channels-last copies of samples [lo, hi): x
// padded ([n][h+2p][w+2p][C]) and dy ([n][oh][ow][OC]).
func directFilterPrep(k *directKernels, t convTask[float32], xs, dys []float32, lo, hi int) {
	s := t.s
	hp, wp := s.H+2*s.Pad, s.W+2*s.Pad
	oh, ow := s.OutH(), s.OutW()
	in, out := s.C*s.H*s.W, s.OC*oh*ow
	for n := lo; n < hi; n++ {
		padChannelsLast(k.transpose, xs[n*hp*wp*s.C:][:hp*wp*s.C], t.w[n*in:(n+1)*in], s.C, s.H, s.W, s.Pad)
		transposeRows(k.transpose, dys[n*oh*ow*s.OC:][:oh*ow*s.OC], s.OC, t.in[n*out:(n+1)*out], oh*ow, s.OC, oh*ow)
	}
}

// directFilterPart computes units [lo, hi) of a filter gradient: unit u
// is tap u%taps of input-channel block (u/taps)%cb and output-channel
// block u/(taps·cb). Samples go in order, each in chunks of output rows
// whose input and output-gradient rows stay in L1 while every unit of the
// worker reads them; each unit's tile of partial sums lives in acc
// (directRows·directCols floats per unit) between chunks.
func (b *Backend[T]) directFilterPart(ws *workerScratch[T], t convTask[float32], xs, dys []float32, lo, hi int) {
	s := t.s
	kw, taps, st := s.KW, s.KH*s.KW, s.Stride
	hp, wp := s.H+2*s.Pad, s.W+2*s.Pad
	oh, ow := s.OutH(), s.OutW()
	cb := s.C / directRows
	const tile = directRows * directCols
	acc := ws.columnsF32((hi - lo) * tile)
	clear(acc)
	filter := b.direct.filter
	chunk := max(1, directFilterChunk/ow) // output rows per kernel call
	for n := 0; n < s.N; n++ {
		xn, dyn := xs[n*hp*wp*s.C:][:hp*wp*s.C], dys[n*oh*ow*s.OC:][:oh*ow*s.OC]
		for i0 := 0; i0 < oh; i0 += chunk {
			rows := min(chunk, oh-i0)
			for u := lo; u < hi; u++ {
				tap, c0, o0 := u%taps, (u/taps)%cb*directRows, u/(taps*cb)*directCols
				// Output (i, j) reads padded input (st·i + kh, st·j + kw).
				x := xn[((st*i0+tap/kw)*wp+tap%kw)*s.C+c0:]
				filter(rows, ow, x, st*wp*s.C, st*s.C, dyn[i0*ow*s.OC+o0:], ow*s.OC, s.OC, acc[(u-lo)*tile:][:tile])
			}
		}
	}
	for u := lo; u < hi; u++ {
		tap, c0, o0 := u%taps, (u/taps)%cb*directRows, u/(taps*cb)*directCols
		a := acc[(u-lo)*tile:][:tile]
		for r := 0; r < directRows; r++ {
			for j := 0; j < directCols; j++ {
				t.out[((o0+j)*s.C+c0+r)*taps+tap] = a[r*directCols+j]
			}
		}
	}
}
