package cpu

import "iterbin/backend"

// Channels-last filter gradients, on processors with AVX-512. The input
// is copied zero-padded with channels innermost ([n][h+2p][w+2p][c]);
// then a tile of 8 output by 16 input channels of one tap, dw[o0:o0+8]
// [c0:c0+16][kh,kw], is a sum over every output position of every sample
// of 8 output-gradient values (read in place from dy's NCHW planes and
// broadcast) times a 16-wide vector of the input: no padded positions are
// computed, nothing is packed, and every tile stays in registers along a
// run of positions. Tiles are split between the workers; each sums its
// own over samples in order. Strides and non-square kernels only change
// where a tap's input run starts and how far apart its positions are.
//
// The channels-last copies are 16×16 block transposes in registers; with
// element-by-element copies the path lost to the AVX2 dot kernel
// (filtergrad.go) on 32×32 planes, with them it is faster on every layer
// of VGG-5 and ResNet-20. (An earlier version also copied dy channels-last
// and broadcast the input instead: as fast per position, but the second
// copy cost a few percent of a ResNet-20 step.)
//
// It takes input channels in multiples of 16 and output channels in
// multiples of 8.

const (
	directRows = 8  // output channels per tile
	directCols = 16 // input channels per tile
	// directFilterChunk is about how many output positions one
	// filter-gradient kernel call covers.
	directFilterChunk = 128
)

// directKernels are the channels-last kernels.
type directKernels struct {
	// transpose does what transposeGo does.
	transpose func(dst []float32, ldd int, src []float32, lds int, blocks int)
	// filter does what filterGo does.
	filter func(rows, cols int, dy []float32, dyRow, dyPlane int, x []float32, xRow, xCol int, acc []float32)
}

// filterGo is the portable reference of the filter-gradient kernel:
// acc[r·16+j] += Σ_i Σ_q dy[r·dyPlane + i·dyRow + q]·x[i·xRow + q·xCol + j]
// for r < 8, j < 16, in (i, q) order.
func filterGo(rows, cols int, dy []float32, dyRow, dyPlane int, x []float32, xRow, xCol int, acc []float32) {
	for i := 0; i < rows; i++ {
		for q := 0; q < cols; q++ {
			xs := x[i*xRow+q*xCol:][:directCols]
			for r := 0; r < directRows; r++ {
				d := dy[r*dyPlane+i*dyRow+q]
				row := acc[r*directCols:][:directCols]
				for j, v := range xs {
					row[j] += d * v
				}
			}
		}
	}
}

// directFilterOK says whether a convolution's filter gradient runs on the
// direct path.
func (b *Backend[T]) directFilterOK(s backend.ConvShape) bool {
	return b.direct != nil && convOK(s) && s.C%directCols == 0 && s.OC%directRows == 0
}

// transposeGo is the reference of the block transpose: dst[j·ldd+i] =
// src[i·lds+j] for i < 16 and j < 16·blocks, blocks of 16×16 side by side
// in src becoming blocks one above the other in dst.
func transposeGo(dst []float32, ldd int, src []float32, lds int, blocks int) {
	for i := 0; i < 16; i++ {
		for j, v := range src[i*lds:][:16*blocks] {
			dst[j*ldd+i] = v
		}
	}
}

// transposeRows sets dst[q·ldd + r] = src[r·lds + q] for r < rows and
// q < cols, in 16×16 blocks where both sides allow and element by element
// at the edges.
func transposeRows(t func(dst []float32, ldd int, src []float32, lds int, blocks int), dst []float32, ldd int, src []float32, lds, rows, cols int) {
	r16, q16 := rows/16*16, cols/16*16
	for r := 0; r < r16 && q16 > 0; r += 16 {
		t(dst[r:], ldd, src[r*lds:], lds, q16/16)
	}
	if r16 == rows && q16 == cols {
		return // no edges
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

// padChannelsLast copies the cin×h×w sample x into the interior of xp,
// [h+2·pad][w+2·pad][cin]: each row of the sample is a cin×w block
// transposed into w×cin. The padding is left as it is (the caller zeroes
// it once for every sample). Rows narrower than a 16×16 transpose go
// through tmp (cin·h·w floats) instead: the whole sample transposed at
// once, then each row copied into place.
func padChannelsLast(t func(dst []float32, ldd int, src []float32, lds int, blocks int), xp, x, tmp []float32, cin, h, w, pad int) {
	wp := w + 2*pad
	whole := w < 16 && h*w >= 16 && len(tmp) >= cin*h*w
	if whole {
		transposeRows(t, tmp, cin, x, h*w, cin, h*w)
	}
	for r := 0; r < h; r++ {
		row := xp[((r+pad)*wp+pad)*cin:][:w*cin]
		if whole {
			copy(row, tmp[r*w*cin:(r+1)*w*cin])
			continue
		}
		transposeRows(t, row, cin, x[r*w:], h*w, cin, w)
	}
}

// directFilterPart computes units [lo, hi) of a filter gradient: unit u
// is tap u%taps of input-channel block (u/taps)%cb and output-channel
// block u/(taps·cb). Samples go in order: the worker copies each into its
// own zero-padded channels-last buffer (which stays in its cache; the
// padding is zeroed once), then runs over it in chunks of output rows
// whose input and output-gradient rows stay in L1 while every unit of the
// worker reads them; each unit's tile of partial sums lives in acc
// (directRows·directCols floats per unit) between chunks.
func (b *Backend[T]) directFilterPart(ws *workerScratch[T], t convTask[float32], lo, hi int) {
	s := t.s
	kw, taps, st := s.KW, s.KH*s.KW, s.Stride
	hp, wp := s.H+2*s.Pad, s.W+2*s.Pad
	oh, ow := s.OutH(), s.OutW()
	cb := s.C / directCols
	const tile = directRows * directCols
	acc := ws.columnsF32((hi - lo) * tile)
	clear(acc)
	if cap(ws.pad) < hp*wp*s.C {
		ws.pad = make([]float32, hp*wp*s.C)
	}
	xn := ws.pad[:hp*wp*s.C]
	clear(xn)
	in := s.C * s.H * s.W
	var tmp []float32
	if s.W < 16 {
		tmp = ws.matrixBuf(in)
	}
	filter := b.direct.filter
	chunk := max(1, directFilterChunk/ow) // output rows per kernel call
	out := s.OC * oh * ow
	for n := 0; n < s.N; n++ {
		// The input x travels in the w slot.
		padChannelsLast(b.direct.transpose, xn, t.w[n*in:(n+1)*in], tmp, s.C, s.H, s.W, s.Pad)
		dyn := t.in[n*out : (n+1)*out]
		for i0 := 0; i0 < oh; i0 += chunk {
			rows := min(chunk, oh-i0)
			for u := lo; u < hi; u++ {
				tap, c0, o0 := u%taps, (u/taps)%cb*directCols, u/(taps*cb)*directRows
				// Output (i, j) reads padded input (st·i + kh, st·j + kw).
				x := xn[((st*i0+tap/kw)*wp+tap%kw)*s.C+c0:]
				filter(rows, ow, dyn[(o0*oh+i0)*ow:], ow, oh*ow, x, st*wp*s.C, st*s.C, acc[(u-lo)*tile:][:tile])
			}
		}
	}
	for u := lo; u < hi; u++ {
		tap, c0, o0 := u%taps, (u/taps)%cb*directCols, u/(taps*cb)*directRows
		a := acc[(u-lo)*tile:][:tile]
		for r := 0; r < directRows; r++ {
			for j := 0; j < directCols; j++ {
				t.out[((o0+r)*s.C+c0+j)*taps+tap] = a[r*directCols+j]
			}
		}
	}
}
