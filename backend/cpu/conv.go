package cpu

import "iterbin/backend"

// Convolutions run as im2col + GEMM, one sample at a time, each worker
// building C·KH·KW × OH·OW columns in its own scratch.

// convOK says whether a convolution shape is valid: positive sizes and a
// kernel no larger than the padded input (OutH alone would round a too
// large kernel with a stride above 1 up to one output row).
func convOK(s backend.ConvShape) bool {
	return s.N >= 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.OC > 0 && s.KH > 0 && s.KW > 0 && s.Stride > 0 && s.Pad >= 0 &&
		s.H+2*s.Pad >= s.KH && s.W+2*s.Pad >= s.KW
}

// im2col writes the columns of one sample x (C×H×W): row (c, kh, kw),
// column (oh, ow) holds x[c, oh·stride−pad+kh, ow·stride−pad+kw] or 0.
func im2col[T Float](cols, x []T, s backend.ConvShape) { im2colChannels(cols, x, s, 0, s.C) }

// validCols returns the output columns [lo, hi) whose input column
// j·stride − pad + kw lies inside [0, w).
func validCols(ow, w, stride, pad, kw int) (lo, hi int) {
	if d := pad - kw; d > 0 {
		lo = (d + stride - 1) / stride
	}
	if last := w - 1 + pad - kw; last >= 0 { // else no column is inside
		hi = min(ow, last/stride+1)
	}
	return min(lo, hi), hi
}

// im2colChannels writes only the rows of channels [c0, c1), from row 0.
func im2colChannels[T Float](cols, x []T, s backend.ConvShape, c0, c1 int) {
	oh, ow := s.OutH(), s.OutW()
	for c := c0; c < c1; c++ {
		plane := x[c*s.H*s.W : (c+1)*s.H*s.W]
		for kh := 0; kh < s.KH; kh++ {
			for kw := 0; kw < s.KW; kw++ {
				row := cols[(((c-c0)*s.KH+kh)*s.KW+kw)*oh*ow:][:oh*ow]
				lo, hi := validCols(ow, s.W, s.Stride, s.Pad, kw)
				off := kw - s.Pad
				for i := 0; i < oh; i++ {
					hr := i*s.Stride - s.Pad + kh
					out := row[i*ow : (i+1)*ow]
					if hr < 0 || hr >= s.H {
						clear(out)
						continue
					}
					src := plane[hr*s.W : (hr+1)*s.W]
					clear(out[:lo])
					clear(out[hi:])
					if lo >= hi {
						continue // no column is inside
					}
					if s.Stride == 1 {
						copy(out[lo:hi], src[lo+off:hi+off])
						continue
					}
					for j := lo; j < hi; j++ {
						out[j] = src[j*s.Stride+off]
					}
				}
			}
		}
	}
}

// col2im adds the columns back into one sample dx (C×H×W), which the
// caller has zeroed: the transpose of im2col.
func col2im[T Float](dx, cols []T, s backend.ConvShape) {
	oh, ow := s.OutH(), s.OutW()
	for c := 0; c < s.C; c++ {
		plane := dx[c*s.H*s.W : (c+1)*s.H*s.W]
		for kh := 0; kh < s.KH; kh++ {
			for kw := 0; kw < s.KW; kw++ {
				row := cols[((c*s.KH+kh)*s.KW+kw)*oh*ow:][:oh*ow]
				lo, hi := validCols(ow, s.W, s.Stride, s.Pad, kw)
				off := kw - s.Pad
				for i := 0; i < oh; i++ {
					hr := i*s.Stride - s.Pad + kh
					if hr < 0 || hr >= s.H {
						continue
					}
					dst := plane[hr*s.W : (hr+1)*s.W]
					src := row[i*ow : (i+1)*ow]
					if lo >= hi {
						continue // no column is inside
					}
					if s.Stride == 1 {
						d := dst[lo+off : hi+off]
						for j, v := range src[lo:hi] {
							d[j] += v
						}
						continue
					}
					for j := lo; j < hi; j++ {
						dst[j*s.Stride+off] += src[j]
					}
				}
			}
		}
	}
}

// pointwise says whether the convolution is 1×1, stride 1, no padding:
// then a sample's columns are the sample itself.
func pointwise(s backend.ConvShape) bool {
	return s.KH == 1 && s.KW == 1 && s.Stride == 1 && s.Pad == 0
}

func (b *Backend[T]) convArgs(op string, s backend.ConvShape, names [3]string, ts [3]backend.Tensor, sizes [3]int) (ok bool, out [3][]T) {
	if !convOK(s) {
		b.fail(&backend.SizeError{Op: op + " (bad shape)", Arg: "shape", Need: 1, Have: 0})
		return false, out
	}
	for i := range ts {
		if out[i] = b.get(op, names[i], ts[i], sizes[i]); out[i] == nil {
			return false, out
		}
	}
	return true, out
}

// implicitOK says whether a float32 convolution runs without im2col: stride
// 1, square kernel, padding at most the kernel size less one.
func implicitOK(s backend.ConvShape) bool {
	return s.Stride == 1 && s.KH == s.KW && s.Pad <= s.KH-1 && !pointwise(s)
}

// implicitPadding is the geometry of the padded sample an implicit
// convolution reads: cin planes of h×w, padded by pad, read by a k×k
// kernel.
type implicitPadding struct{ cin, h, w, pad, k int }

// padded returns the worker's padded-sample buffer for g, cin planes of
// h+2·pad rows w+pad apart (with slack for the last tile's reads), and
// the offsets of the rows (c, kh, kw) of the implicit column matrix in
// it. Only implicitConv uses this buffer, and it writes only the planes'
// interiors: when the last call had the same geometry the padding is
// still zero, else the buffer is cleared first.
func (s *workerScratch[T]) padded(g implicitPadding) ([]float32, []int64) {
	hp, wp := g.h+2*g.pad, g.w+g.pad
	need := g.cin*hp*wp + g.k + nr*2
	if s.implicit == g && len(s.implicitPad) == need {
		return s.implicitPad, s.implicitOffs
	}
	if cap(s.implicitPad) < need {
		s.implicitPad = make([]float32, need)
	}
	s.implicitPad = s.implicitPad[:need]
	clear(s.implicitPad)
	rows := g.cin * g.k * g.k
	if cap(s.implicitOffs) < rows {
		s.implicitOffs = make([]int64, rows)
	}
	offs := s.implicitOffs[:rows]
	for c := 0; c < g.cin; c++ {
		for i := 0; i < g.k; i++ {
			for j := 0; j < g.k; j++ {
				offs[(c*g.k+i)*g.k+j] = int64(c*hp*wp + i*wp + j)
			}
		}
	}
	s.implicitOffs, s.implicit = offs, g
	return s.implicitPad, offs
}

// padChannels copies the cin channels of the h×w sample x into xp,
// zero-padded by pad, with rows wp = w+pad apart: a row's right padding
// is the next row's left padding. Only the padding and the slack after
// the last channel are zeroed; every other element is overwritten.
func padChannels(v *vectorOps, xp, x []float32, cin, h, w, pad int) {
	rows := v.padRows
	if rows == nil {
		rows = padRowsPart
	}
	wp := w + pad
	plane := (h + 2*pad) * wp
	for c := 0; c < cin; c++ {
		p := xp[c*plane:][:plane]
		clear(p[:pad*wp]) // top rows
		rows(p[pad*wp:], x[c*h*w:][:h*w], h, w, wp, pad)
		clear(p[(h+pad)*wp:]) // bottom rows
	}
	clear(xp[cin*plane:])
}

// implicitConv computes one sample y (cout×OH×OW) of a stride-1
// convolution of x (cin×h×w, zero-padded by pad ≤ k−1) with weights
// prepacked in a (cout × cin·k·k), without building columns: the worker
// copies the sample into a padded buffer of rows wp = w+pad apart
// (neighbouring rows share their padding, as in padChannels; the padding
// is zeroed once, see padded), and the micro-kernel reads row (c, kh, kw)
// of the column matrix straight from it at offset c·hp·wp + kh·wp + kw,
// 16 output positions at a time. The sum runs over the same k order as
// im2col.
//
// When output rows are a multiple of 16 wide, each tile is 16 positions
// of one row and the kernel writes y in place (rows of a panel past cout
// go through a tile buffer). Otherwise tiles run over padded rows: the
// kernel writes whole tiles into a padded output and the wp−ow extra
// columns of each row are dropped when it is copied to y.
func (b *Backend[T]) implicitConv(ws *workerScratch[T], a matrix, cout int, x []float32, cin, h, w, k, pad int, y []float32) {
	hp, wp := h+2*pad, w+pad
	oh, ow := hp-k+1, w+2*pad-k+1
	xp, offs := ws.padded(implicitPadding{cin, h, w, pad, k})
	rows := b.vec.padRows
	if rows == nil {
		rows = padRowsPart
	}
	for c := 0; c < cin; c++ { // the interior of each plane: pad zeros per row already there
		rows(xp[c*hp*wp+pad*wp+pad:], x[c*h*w:][:h*w], h, w, wp, 0)
	}
	b.implicitTiles(ws, a, cout, xp, offs, wp, oh, ow, y)
}

// implicitTiles computes y (cout×oh×ow) = A·B for weights prepacked in a
// and the implicit matrix B whose row p, at output row i and column j,
// is xp[offs[p] + i·wp + j]; see implicitConv.
func (b *Backend[T]) implicitTiles(ws *workerScratch[T], a matrix, cout int, xp []float32, offs []int64, wp, oh, ow int, y []float32) {
	kk := len(offs)
	tile := ws.gemm.tile
	run, panelRows := b.implicit.run, a.panel
	if ow%nr == 0 {
		plane := oh * ow
		for r0 := 0; r0 < cout; r0 += panelRows {
			rows := min(panelRows, cout-r0)
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j += nr {
					src := xp[i*wp+j:]
					for pc := 0; pc < kk; pc += kc {
						kLen := min(kc, kk-pc)
						panel := a.packed[pc*a.mPad+r0*kLen:][:panelRows*kLen]
						if rows == panelRows {
							run(kLen, panel, src, offs[pc:pc+kLen], y[r0*plane+i*ow+j:], plane, pc > 0)
							continue
						}
						run(kLen, panel, src, offs[pc:pc+kLen], tile, nr, pc > 0)
					}
					for r := 0; r < rows && rows < panelRows; r++ {
						copy(y[(r0+r)*plane+i*ow+j:][:nr], tile[r*nr:][:nr])
					}
				}
			}
		}
		return
	}
	if run2 := b.implicit.twoRows; run2 != nil && ow == nr/2 && oh%2 == 0 {
		// Tiles of two output rows: the second half of each B row is the
		// next input row, wp floats on.
		plane := oh * ow
		for r0 := 0; r0 < cout; r0 += panelRows {
			rows := min(panelRows, cout-r0)
			for i := 0; i < oh; i += 2 {
				src := xp[i*wp:]
				for pc := 0; pc < kk; pc += kc {
					kLen := min(kc, kk-pc)
					panel := a.packed[pc*a.mPad+r0*kLen:][:panelRows*kLen]
					if rows == panelRows {
						run2(kLen, panel, src, offs[pc:pc+kLen], wp, y[r0*plane+i*ow:], plane, pc > 0)
						continue
					}
					run2(kLen, panel, src, offs[pc:pc+kLen], wp, tile, nr, pc > 0)
				}
				for r := 0; r < rows && rows < panelRows; r++ {
					copy(y[(r0+r)*plane+i*ow:][:nr], tile[r*nr:][:nr])
				}
			}
		}
		return
	}
	positions := roundUp(oh*wp, nr)
	yp := ws.matrixBuf(a.mPad * positions)
	for j0 := 0; j0 < positions; j0 += nr {
		for r0 := 0; r0 < cout; r0 += panelRows {
			for pc := 0; pc < kk; pc += kc {
				kLen := min(kc, kk-pc)
				run(kLen, a.packed[pc*a.mPad+r0*kLen:][:panelRows*kLen], xp[j0:], offs[pc:pc+kLen], yp[r0*positions+j0:], positions, pc > 0)
			}
		}
	}
	for o := 0; o < cout; o++ {
		for r := 0; r < oh; r++ {
			copy(y[(o*oh+r)*ow:][:ow], yp[o*positions+r*wp:][:ow])
		}
	}
}

// Strided convolutions run through implicitTiles too, on a phase split
// of the padded sample: phase (a, b) of channel c holds xpad[c][st·i+a]
// [st·j+b], and tap (kh, kw) = (st·dh+a, st·dw+b) of output (i, j) reads
// phase (a, b) at (i+dh, j+dw), so 16 outputs of a row read 16 neighbours
// of a phase row. The column matrix's rows then run in the order
// (c, a, b, dh, dw), which keeps their offsets increasing, and the weights
// are packed in that order (stridedWeights).

// stridedOK says whether a float32 convolution runs on the phase split:
// stride at least 2, square kernel.
func stridedOK(s backend.ConvShape) bool {
	return s.Stride >= 2 && s.KH == s.KW
}

// stridedOffsets sets offs to the offsets, in phase planes of hph×wph
// (st·st per channel, rows wph apart), of the rows of the phase-split
// column matrix, in the order (c, a, b, dh, dw).
func stridedOffsets(offs []int64, cin, k, st, hph, wph int) []int64 {
	offs = offs[:0]
	for c := 0; c < cin; c++ {
		for a := 0; a < st; a++ {
			for bb := 0; bb < st; bb++ {
				base := ((c*st+a)*st + bb) * hph * wph
				for dh := 0; st*dh+a < k; dh++ {
					for dw := 0; st*dw+bb < k; dw++ {
						offs = append(offs, int64(base+dh*wph+dw))
					}
				}
			}
		}
	}
	return offs
}

// stridedWeights sets dst (cout × cin·k·k) to the weights w (cout × cin ×
// k × k) with each row's columns in the order of stridedOffsets.
func stridedWeights(dst, w []float32, cout, cin, k, st int) {
	kk := cin * k * k
	for o := 0; o < cout; o++ {
		out, src := dst[o*kk:][:kk], w[o*kk:][:kk]
		p := 0
		for c := 0; c < cin; c++ {
			for a := 0; a < st; a++ {
				for bb := 0; bb < st; bb++ {
					for dh := 0; st*dh+a < k; dh++ {
						for dw := 0; st*dw+bb < k; dw++ {
							out[p] = src[(c*k+st*dh+a)*k+st*dw+bb]
							p++
						}
					}
				}
			}
		}
	}
}

// stridedConv computes one sample y of a strided convolution of x
// (cin×h×w, zero-padded by pad) with weights prepacked in stridedOrder.
func (b *Backend[T]) stridedConv(ws *workerScratch[T], a matrix, s backend.ConvShape, x, y []float32) {
	st, k, pad := s.Stride, s.KH, s.Pad
	hp, wp := s.H+2*pad, s.W+2*pad
	hph, wph := (hp+st-1)/st, (wp+st-1)/st
	phases := s.C * st * st * hph * wph
	need := phases + 2*wph + 2*nr
	if cap(ws.pad) < need {
		ws.pad = make([]float32, need)
	}
	xp := ws.pad[:need]
	clear(xp)
	if st == 2 {
		deinterleave := b.vec.deinterleave
		if deinterleave == nil {
			deinterleave = deinterleavePart
		}
		// Rows r of one parity go to consecutive rows (r+pad)/2 of phase
		// a = (r+pad)%2; even columns q go to phase pad%2 at (q+pad)/2,
		// odd ones to the other phase.
		ph := hph * wph
		even, odd := pad%2*ph+pad/2, (pad+1)%2*ph+(pad+1)/2
		for c := 0; c < s.C; c++ {
			for r0 := 0; r0 < min(2, s.H); r0++ {
				pr := r0 + pad
				row := xp[(c*4+pr%2*2)*ph+pr/2*wph:]
				deinterleave(row[even:], row[odd:], x[(c*s.H+r0)*s.W:], (s.H-r0+1)/2, s.W, wph, 2*s.W)
			}
		}
	}
	for c := 0; c < s.C && st != 2; c++ {
		for r := 0; r < s.H; r++ {
			src := x[(c*s.H+r)*s.W:][:s.W]
			pr := r + pad // padded row
			row := xp[((c*st+pr%st)*st*hph+pr/st)*wph:]
			for bb := 0; bb < st; bb++ {
				// Columns q with (q+pad)%st == bb go to phase column
				// (q+pad)/st of phase bb.
				q := ((bb-pad)%st + st) % st
				dst := row[bb*hph*wph+(q+pad)/st:]
				for j := 0; q < s.W; j, q = j+1, q+st {
					dst[j] = src[q]
				}
			}
		}
	}
	if cap(ws.offs) < s.C*k*k {
		ws.offs = make([]int64, s.C*k*k)
	}
	offs := stridedOffsets(ws.offs, s.C, k, st, hph, wph)
	b.implicitTiles(ws, a, s.OC, xp, offs, wph, s.OutH(), s.OutW(), y)
}

// Strided input gradients split dx into phases the same way: dx at
// padded position (st·I + a, st·J + b) takes only the taps (kh, kw) =
// (a + st·t, b + st·u), from dy at (I − t, J − u). For each phase that is
// a stride-1 correlation of dy, padded, with those taps flipped: one
// implicitTiles call per phase, whose result is scattered into dx.

// maxPhaseStride bounds the strides whose input gradients run on phases
// (st·st packed weight sets per convolution).
const maxPhaseStride = 4

// phaseTaps is the number of taps of a k-wide kernel in phase a of stride
// st.
func phaseTaps(k, st, a int) int { return max(0, (k-a+st-1)/st) }

// packPhases packs, for each phase (a, b) with taps, the weights W_ab[c]
// [(o, d, e)] = w[o][c][a + st·(ta−1−d)][b + st·(tb−1−e)] (C × OC·ta·tb)
// into b.phases, all in b.packedW.
func (b *Backend[T]) packPhases(w []float32, s backend.ConvShape) {
	k, st := s.KH, s.Stride
	b.phases = b.phases[:0]
	var sizes [maxPhaseStride * maxPhaseStride]int
	total := 0
	for a := 0; a < st; a++ {
		for bb := 0; bb < st; bb++ {
			kk := s.OC * phaseTaps(k, st, a) * phaseTaps(k, st, bb)
			sizes[a*st+bb] = roundUp(s.C, b.implicit.rows) * kk
			total += sizes[a*st+bb]
		}
	}
	b.packedW = grow(b.packedW, total)
	b.flippedW = grow(b.flippedW, s.C*s.OC*k*k)
	off := 0
	for a := 0; a < st; a++ {
		for bb := 0; bb < st; bb++ {
			ta, tb := phaseTaps(k, st, a), phaseTaps(k, st, bb)
			kk := s.OC * ta * tb
			if kk == 0 {
				b.phases = append(b.phases, matrix{})
				continue
			}
			wp := b.flippedW[:s.C*kk]
			for c := 0; c < s.C; c++ {
				row := wp[c*kk:]
				for o := 0; o < s.OC; o++ {
					for d := 0; d < ta; d++ {
						for e := 0; e < tb; e++ {
							row[(o*ta+d)*tb+e] = w[((o*s.C+c)*k+a+st*(ta-1-d))*k+bb+st*(tb-1-e)]
						}
					}
				}
			}
			m := prepackA(b.packedW[off:off:off+sizes[a*st+bb]], matrix{data: wp, ld: kk}, s.C, kk, 1, b.implicit.rows)
			b.phases = append(b.phases, m)
			off += sizes[a*st+bb]
		}
	}
}

// phasedBackwardData sets one sample dx (C×H×W) of a strided convolution's
// input gradient from dy (OC×OH×OW) and the weights in b.phases. Each
// phase is computed only at the positions that lie inside dx, so that its
// rows are as wide as dx's share of them (16 for a 32-wide dx at stride
// 2: whole tiles, written in place). At stride 2, when every phase has
// taps, each row of dx is the interleave of two phase rows; otherwise the
// phases are scattered into dx, which starts at zero.
func (b *Backend[T]) phasedBackwardData(ws *workerScratch[T], s backend.ConvShape, dy, dx []float32) {
	k, st, pad := s.KH, s.Stride, s.Pad
	oh, ow := s.OutH(), s.OutW()
	// dy's padding: before the first row and column, the most taps of a
	// phase less one; after the last, as far as the last phase position
	// reads past dy (input positions no output reaches read zeros there).
	p := phaseTaps(k, st, 0) - 1
	p = max(p, (s.H-1+pad)/st-(oh-1), (s.W-1+pad)/st-(ow-1))
	wpd := ow + p // rows share their padding (padChannels)
	plane := (oh + 2*p) * wpd
	need := s.OC*plane + 2*wpd + 2*nr
	if cap(ws.pad) < need {
		ws.pad = make([]float32, need)
	}
	dyp := ws.pad[:need]
	padChannels(&b.vec, dyp, dy, s.OC, oh, ow, p)

	// Phase (a, bb) holds dx at (st·(I0+i) + a − pad, st·(J0+j) + bb − pad)
	// for i < nI, j < nJ: the first I0 rows and J0 columns of the phase
	// would fall before dx.
	type phase struct{ i0, j0, nI, nJ, off int }
	var phases [maxPhaseStride * maxPhaseStride]phase
	total, all := 0, true
	for a := 0; a < st; a++ {
		for bb := 0; bb < st; bb++ {
			i0, nI := phaseSpan(s.H, st, a-pad)
			j0, nJ := phaseSpan(s.W, st, bb-pad)
			if phaseTaps(k, st, a) == 0 || phaseTaps(k, st, bb) == 0 || nI <= 0 || nJ <= 0 {
				all = all && (nI <= 0 || nJ <= 0) // no taps reach these positions: dx is 0 there
				continue
			}
			phases[a*st+bb] = phase{i0, j0, nI, nJ, total}
			total += s.C * nI * nJ
		}
	}
	yph := ws.columnsF32(total)
	for a := 0; a < st; a++ {
		for bb := 0; bb < st; bb++ {
			ph := phases[a*st+bb]
			if ph.nI == 0 {
				continue
			}
			ta, tb := phaseTaps(k, st, a), phaseTaps(k, st, bb)
			if cap(ws.offs) < s.OC*ta*tb {
				ws.offs = make([]int64, s.OC*ta*tb)
			}
			offs := ws.offs[:s.OC*ta*tb]
			for o := 0; o < s.OC; o++ {
				for d := 0; d < ta; d++ {
					for e := 0; e < tb; e++ {
						offs[(o*ta+d)*tb+e] = int64(o*plane + (ph.i0+d+p-ta+1)*wpd + ph.j0 + e + p - tb + 1)
					}
				}
			}
			b.implicitTiles(ws, b.phases[a*st+bb], s.C, dyp, offs, wpd, ph.nI, ph.nJ, yph[ph.off:][:s.C*ph.nI*ph.nJ])
		}
	}
	if st == 2 && all && s.W > 1 {
		// Row ih of dx is in row phase a = (ih+pad)%2; its even columns
		// come from column phase pad%2, its odd ones from the other.
		interleave := b.vec.interleave
		if interleave == nil {
			interleave = interleavePart
		}
		for ih0 := 0; ih0 < min(2, s.H); ih0++ {
			a := (ih0 + pad) % 2
			ev, od := phases[a*2+pad%2], phases[a*2+(pad+1)%2]
			i := (ih0+pad)/2 - ev.i0 // the phases' row of dx row ih0
			for c := 0; c < s.C; c++ {
				interleave(dx[(c*s.H+ih0)*s.W:], yph[ev.off+(c*ev.nI+i)*ev.nJ:], yph[od.off+(c*od.nI+i)*od.nJ:],
					(s.H-ih0+1)/2, s.W, 2*s.W, ev.nJ, od.nJ)
			}
		}
		return
	}
	clear(dx)
	for a := 0; a < st; a++ {
		for bb := 0; bb < st; bb++ {
			ph := phases[a*st+bb]
			for c := 0; c < s.C && ph.nI > 0; c++ {
				for i := 0; i < ph.nI; i++ {
					src := yph[ph.off+(c*ph.nI+i)*ph.nJ:][:ph.nJ]
					dst := dx[(c*s.H+st*(ph.i0+i)+a-pad)*s.W:]
					for j, v := range src {
						dst[st*(ph.j0+j)+bb-pad] = v
					}
				}
			}
		}
	}
}

// phaseSpan returns the first index i0 and the number of indices I ≥ i0
// with 0 ≤ st·I + off < n.
func phaseSpan(n, st, off int) (i0, count int) {
	if off < 0 {
		i0 = (-off + st - 1) / st
	}
	if n-1-off < 0 {
		return i0, 0
	}
	return i0, max(0, (n-1-off)/st+1-i0)
}

// Conv2DForward computes y = conv(x, w), y[n] = W·cols(x[n]); samples
// are shared between the workers.
func (b *Backend[T]) Conv2DForward(yt, xt, wt backend.Tensor, s backend.ConvShape) {
	in, out, k := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW
	ok, v := b.convArgs("Conv2DForward", s, [3]string{"y", "x", "w"}, [3]backend.Tensor{yt, xt, wt}, [3]int{s.N * out, s.N * in, s.OC * k})
	if !ok {
		return
	}
	t := convTask[T]{s: s, out: v[0], in: v[1], w: v[2]}
	if w, ok := any(v[2]).([]float32); ok && b.winogradOK(s) {
		b.transformFilters(w, s.C, s.OC, false)
		t.winograd = true
	} else if ok {
		panel := mr
		if implicitOK(s) || stridedOK(s) {
			panel = b.implicit.rows
		}
		src := w
		if stridedOK(s) {
			b.flippedW = grow(b.flippedW, len(w))
			stridedWeights(b.flippedW, w, s.OC, s.C, s.KH, s.Stride)
			src = b.flippedW
		}
		t.packedW = prepackA(b.packedW, matrix{data: src, ld: k}, s.OC, k, 1, panel)
		b.packedW = t.packedW.packed
	}
	b.pool.run(b, task[T]{kind: taskConvForward, cv: t}, s.N)
}

func (b *Backend[T]) convForwardPart(ws *workerScratch[T], t convTask[T], lo, hi int) {
	s := t.s
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	for n := lo; n < hi; n++ {
		if t.winograd {
			b.winogradConv(ws, b.winogradU, s.C, s.OC, s.H, s.W, any(t.in[n*in:(n+1)*in]).([]float32), any(t.out[n*out:(n+1)*out]).([]float32))
			continue
		}
		if t.packedW.packed != nil && implicitOK(s) {
			b.implicitConv(ws, t.packedW, s.OC, any(t.in[n*in:(n+1)*in]).([]float32), s.C, s.H, s.W, s.KH, s.Pad, any(t.out[n*out:(n+1)*out]).([]float32))
			continue
		}
		if t.packedW.packed != nil && stridedOK(s) {
			b.stridedConv(ws, t.packedW, s, any(t.in[n*in:(n+1)*in]).([]float32), any(t.out[n*out:(n+1)*out]).([]float32))
			continue
		}
		cols := t.in[n*in : (n+1)*in]
		if !pointwise(s) {
			cols = ws.columns(k * p)
			im2col(cols, t.in[n*in:(n+1)*in], s)
		}
		if t.packedW.packed != nil {
			b.gemmPrepacked(ws, t.packedW, false, s.OC, p, k, cols, 0, t.out[n*out:(n+1)*out])
		} else {
			b.gemmOne(ws, false, false, s.OC, p, k, 1, t.w, cols, 0, t.out[n*out:(n+1)*out])
		}
	}
}

// Conv2DBackwardData computes dx[n] = col2im(Wᵀ·dy[n]); samples are shared
// between the workers.
func (b *Backend[T]) Conv2DBackwardData(dxt, dyt, wt backend.Tensor, s backend.ConvShape) {
	b.conv2DBackwardData("Conv2DBackwardData", false, dxt, dyt, wt, s)
}

// Conv2DBackwardDataAdd adds the input gradient to dx: each sample's is
// computed as Conv2DBackwardData computes it, then added while it is still
// in cache.
func (b *Backend[T]) Conv2DBackwardDataAdd(dxt, dyt, wt backend.Tensor, s backend.ConvShape) {
	b.conv2DBackwardData("Conv2DBackwardDataAdd", true, dxt, dyt, wt, s)
}

func (b *Backend[T]) conv2DBackwardData(op string, add bool, dxt, dyt, wt backend.Tensor, s backend.ConvShape) {
	in, out, k := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW
	ok, v := b.convArgs(op, s, [3]string{"dx", "dy", "w"}, [3]backend.Tensor{dxt, dyt, wt}, [3]int{s.N * in, s.N * out, s.OC * k})
	if !ok {
		return
	}
	t := convTask[T]{s: s, out: v[0], in: v[1], w: v[2], add: add}
	if w, ok := any(v[2]).([]float32); ok && b.winogradOK(s) {
		// dx is the convolution of dy with the filters turned by 180°,
		// input and output channels swapped.
		b.transformFilters(w, s.OC, s.C, true)
		t.winograd = true
	} else if ok && stridedOK(s) && s.Stride <= maxPhaseStride {
		b.packPhases(w, s)
		t.phased = true
	} else if ok {
		if implicitOK(s) {
			// dx is the stride-1 convolution of dy, padded by k−1−pad, with
			// W′[c][o][i][j] = W[o][c][k−1−i][k−1−j].
			kk := s.KH
			if cap(b.flippedW) < len(w) {
				b.flippedW = make([]float32, len(w))
			}
			fw := b.flippedW[:len(w)]
			for o := 0; o < s.OC; o++ {
				for c := 0; c < s.C; c++ {
					for i := 0; i < kk; i++ {
						for j := 0; j < kk; j++ {
							fw[((c*s.OC+o)*kk+i)*kk+j] = w[((o*s.C+c)*kk+kk-1-i)*kk+kk-1-j]
						}
					}
				}
			}
			t.packedW = prepackA(b.packedW, matrix{data: fw, ld: s.OC * kk * kk}, s.C, s.OC*kk*kk, 1, b.implicit.rows)
		} else {
			t.packedW = prepackA(b.packedW, matrix{data: w, ld: k, trans: true}, k, s.OC, 1, mr)
		}
		b.packedW = t.packedW.packed
	}
	b.pool.run(b, task[T]{kind: taskConvBackwardData, cv: t}, s.N)
}

func (b *Backend[T]) convBackwardDataPart(ws *workerScratch[T], t convTask[T], lo, hi int) {
	s := t.s
	in, out := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW()
	for n := lo; n < hi; n++ {
		dx, dy := t.out[n*in:(n+1)*in], t.in[n*out:(n+1)*out]
		if !t.add {
			b.backwardDataSample(ws, t, dy, dx)
			continue
		}
		// The sample's gradient, still in this worker's cache, is added
		// to what dx holds.
		g := ws.sampleBuf(in)
		b.backwardDataSample(ws, t, dy, g)
		if add, ok := any(b.vec.add).(func(y, a, c []T)); ok && add != nil {
			add(dx, g, dx)
			continue
		}
		addPart(dx, g, dx)
	}
}

// backwardDataSample sets one sample dx of the input gradient from dy.
func (b *Backend[T]) backwardDataSample(ws *workerScratch[T], t convTask[T], dy, dx []T) {
	s := t.s
	k, p := s.C*s.KH*s.KW, s.OutH()*s.OutW()
	if t.winograd {
		b.winogradConv(ws, b.winogradU, s.OC, s.C, s.H, s.W, any(dy).([]float32), any(dx).([]float32))
		return
	}
	if t.phased {
		b.phasedBackwardData(ws, s, any(dy).([]float32), any(dx).([]float32))
		return
	}
	if t.packedW.packed != nil && implicitOK(s) {
		b.implicitConv(ws, t.packedW, s.C, any(dy).([]float32), s.OC, s.OutH(), s.OutW(), s.KH, s.KH-1-s.Pad, any(dx).([]float32))
		return
	}
	dst := dx
	if !pointwise(s) {
		dst = ws.columns(k * p)
	}
	if t.packedW.packed != nil {
		b.gemmPrepacked(ws, t.packedW, false, k, p, s.OC, dy, 0, dst)
	} else {
		b.gemmOne(ws, true, false, k, p, s.OC, 1, t.w, dy, 0, dst)
	}
	if pointwise(s) {
		return
	}
	clear(dx)
	col2im(dx, dst, s)
}

// Conv2DBackwardFilter computes dw = Σ_n dy[n]·cols(x[n])ᵀ. The workers
// share the input channels, each building only its channels' columns and
// writing its own columns of dw, so each weight is summed over samples in
// the same order whatever the number of workers.
func (b *Backend[T]) Conv2DBackwardFilter(dwt, dyt, xt backend.Tensor, s backend.ConvShape) {
	in, out, k := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW
	ok, v := b.convArgs("Conv2DBackwardFilter", s, [3]string{"dw", "dy", "x"}, [3]backend.Tensor{dwt, dyt, xt}, [3]int{s.OC * k, s.N * out, s.N * in})
	if !ok {
		return
	}
	t := convTask[T]{s: s, out: v[0], in: v[1], w: v[2]}
	if _, ok := any(v[0]).([]float32); ok && b.winogradFilterOK(s) && s.N > 0 {
		_, groups := winogradFilterGroups(s)
		b.winogradPartials = grow(b.winogradPartials, groups*16*s.C*s.OC)
		b.pool.run(b, task[T]{kind: taskWinogradFilterGrad, cv: t}, groups)
		b.pool.run(b, task[T]{kind: taskWinogradFilterFinish, cv: t}, s.C)
		return
	}
	if _, ok := any(v[0]).([]float32); ok && b.directFilterOK(s) && s.N > 0 {
		// Tiles of (tap, 16 input channels, 8 output channels), each
		// worker reading channels-last copies of x that it makes itself.
		b.pool.run(b, task[T]{kind: taskDirectFilter, cv: t}, s.KH*s.KW*(s.C/directCols)*(s.OC/directRows))
		return
	}
	b.pool.run(b, task[T]{kind: taskConvBackwardFilter, cv: t}, s.C)
}

// grow returns buf with length n, reallocated when too small.
func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

func (b *Backend[T]) convBackwardFilterPart(ws *workerScratch[T], t convTask[T], c0, c1 int) {
	s := t.s
	if dw, ok := any(t.out).([]float32); ok && implicitOK(s) && s.N > 0 {
		b.implicitFilterGrad(ws, s, dw, any(t.in).([]float32), any(t.w).([]float32), c0, c1)
		return
	}
	in, out, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.OutH()*s.OutW()
	k := s.C * s.KH * s.KW
	k0, rows := c0*s.KH*s.KW, (c1-c0)*s.KH*s.KW
	// dw[:, k0:k0+rows] is an OC×rows block with row stride k.
	dw := t.out[k0:]
	for o := 0; o < s.OC; o++ {
		clear(dw[o*k : o*k+rows])
	}
	for n := 0; n < s.N; n++ {
		x := t.w[n*in : (n+1)*in] // the input x travels in the w slot
		var cols []T
		if pointwise(s) {
			cols = x[c0*p : c1*p]
		} else {
			cols = ws.columns(rows * p)
			im2colChannels(cols, x, s, c0, c1)
		}
		b.gemmStrided(ws, false, true, s.OC, rows, p, t.in[n*out:(n+1)*out], p, cols, p, 1, dw, k)
	}
}

// MaxPool2DForward takes window maxima; windows reaching into the padding
// ignore it (PyTorch's padding is −∞).
func (b *Backend[T]) MaxPool2DForward(yt, argt, xt backend.Tensor, s backend.PoolShape) {
	const op = "MaxPool2DForward"
	oh, ow := s.OutH(), s.OutW()
	if s.Kernel < 1 || s.Stride < 1 || s.Pad < 0 || oh < 1 || ow < 1 || 2*s.Pad > s.Kernel {
		b.fail(&backend.SizeError{Op: op + " (bad shape)", Arg: "shape", Need: 1, Have: 0})
		return
	}
	planes := s.N * s.C
	y, arg, x := b.get(op, "y", yt, planes*oh*ow), b.get(op, "argmax", argt, planes*oh*ow), b.get(op, "x", xt, planes*s.H*s.W)
	if y == nil || arg == nil || x == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskMaxPoolForward, ew: elementTask[T]{a: y, b: arg, c: x}, pool: s}, planes)
}

// maxPoolForwardPart pools planes [lo, hi). 2×2 windows at stride 2
// without padding take the SIMD loop where there is one; every window
// keeps the first of its maxima in scan order.
func maxPoolForwardPart[T Float](v *vectorOps, y, arg, x []T, s backend.PoolShape, lo, hi int) {
	oh, ow := s.OutH(), s.OutW()
	fast := s.Kernel == 2 && s.Stride == 2 && s.Pad == 0 && s.H >= 2 && s.W >= 2 // every window inside
	pool2, _ := any(v.maxPool2x2).(func(y, arg, r0, r1 []T, col, w int))
	if pool2 == nil {
		pool2 = maxPool2x2Part[T]
	}
	for p := lo; p < hi; p++ {
		plane := x[p*s.H*s.W : (p+1)*s.H*s.W]
		if fast {
			for i := 0; i < oh; i++ {
				o := (p*oh + i) * ow
				pool2(y[o:o+ow], arg[o:o+ow], plane[2*i*s.W:], plane[(2*i+1)*s.W:], 2*i*s.W, s.W)
			}
			continue
		}
		for i := 0; i < oh; i++ {
			for j := 0; j < ow; j++ {
				best, bestIdx := T(0), -1
				for kh := 0; kh < s.Kernel; kh++ {
					hi := i*s.Stride - s.Pad + kh
					if hi < 0 || hi >= s.H {
						continue
					}
					for kw := 0; kw < s.Kernel; kw++ {
						wi := j*s.Stride - s.Pad + kw
						if wi < 0 || wi >= s.W {
							continue
						}
						if v := plane[hi*s.W+wi]; bestIdx < 0 || v > best {
							best, bestIdx = v, hi*s.W+wi
						}
					}
				}
				o := (p*oh+i)*ow + j
				y[o], arg[o] = best, T(bestIdx)
			}
		}
	}
}

// MaxPool2DBackward routes dy to the saved argmax positions.
func (b *Backend[T]) MaxPool2DBackward(dxt, dyt, argt backend.Tensor, s backend.PoolShape) {
	const op = "MaxPool2DBackward"
	oh, ow := s.OutH(), s.OutW()
	planes := s.N * s.C
	dx, dy, arg := b.get(op, "dx", dxt, planes*s.H*s.W), b.get(op, "dy", dyt, planes*oh*ow), b.get(op, "argmax", argt, planes*oh*ow)
	if dx == nil || dy == nil || arg == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskMaxPoolBackward, ew: elementTask[T]{a: dx, b: dy, c: arg}, pool: s}, planes)
}

// maxPoolBackwardPart routes the gradients of planes [lo, hi).
func maxPoolBackwardPart[T Float](dx, dy, arg []T, s backend.PoolShape, lo, hi int) {
	oh, ow := s.OutH(), s.OutW()
	for p := lo; p < hi; p++ {
		plane := dx[p*s.H*s.W : (p+1)*s.H*s.W]
		clear(plane)
		for o := p * oh * ow; o < (p+1)*oh*ow; o++ {
			plane[int(arg[o])] += dy[o]
		}
	}
}

// GlobalAvgPoolForward averages each channel plane.
func (b *Backend[T]) GlobalAvgPoolForward(yt, xt backend.Tensor, n, c, spatial int) {
	y, x := b.get("GlobalAvgPoolForward", "y", yt, n*c), b.get("GlobalAvgPoolForward", "x", xt, n*c*spatial)
	if y == nil || x == nil {
		return
	}
	for p := range y {
		var sum T
		for _, v := range x[p*spatial : (p+1)*spatial] {
			sum += v
		}
		y[p] = sum / T(spatial)
	}
}

// GlobalAvgPoolBackward spreads dy evenly over each plane.
func (b *Backend[T]) GlobalAvgPoolBackward(dxt, dyt backend.Tensor, n, c, spatial int) {
	dx, dy := b.get("GlobalAvgPoolBackward", "dx", dxt, n*c*spatial), b.get("GlobalAvgPoolBackward", "dy", dyt, n*c)
	if dx == nil || dy == nil {
		return
	}
	for p, g := range dy {
		v := g / T(spatial)
		row := dx[p*spatial : (p+1)*spatial]
		for i := range row {
			row[i] = v
		}
	}
}

// Add sets y = a + b.
func (b *Backend[T]) Add(yt, at, bt backend.Tensor, n int) {
	b.ternary("Add", taskAdd, [3]string{"y", "a", "b"}, [3]backend.Tensor{yt, at, bt}, n)
}

// AddReLU sets y = max(a + b, 0) in one pass.
func (b *Backend[T]) AddReLU(yt, at, bt backend.Tensor, n int) {
	b.ternary("AddReLU", taskAddReLU, [3]string{"y", "a", "b"}, [3]backend.Tensor{yt, at, bt}, n)
}

// ternary runs an elementwise op of three n-element tensors (output
// first) in blocks shared between the workers.
func (b *Backend[T]) ternary(op string, kind taskKind, names [3]string, ts [3]backend.Tensor, n int) {
	var v [3][]T
	for i := range v {
		if v[i] = b.get(op, names[i], ts[i], n); v[i] == nil {
			return
		}
	}
	b.pool.run(b, task[T]{kind: kind, ew: elementTask[T]{a: v[0], b: v[1], c: v[2]}}, blocks(n))
}

func addPart[T Float](y, a, c []T) {
	for i := range y {
		y[i] = a[i] + c[i]
	}
}

func addReLUPart[T Float](y, a, c []T) {
	for i := range y {
		y[i] = relu(a[i] + c[i])
	}
}

func shortcutOK(s backend.ShortcutShape) bool {
	return s.N >= 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.Stride > 0 && s.OC >= s.C && (s.OC-s.C)%2 == 0
}

// ShortcutAForward subsamples x by the stride and zero-pads channels
// equally on both sides.
func (b *Backend[T]) ShortcutAForward(yt, xt backend.Tensor, s backend.ShortcutShape) {
	const op = "ShortcutAForward"
	if !shortcutOK(s) {
		b.fail(&backend.SizeError{Op: op + " (bad shape: OC must be C plus an even number)", Arg: "shape", Need: s.C, Have: s.OC})
		return
	}
	oh, ow := s.OutH(), s.OutW()
	y, x := b.get(op, "y", yt, s.N*s.OC*oh*ow), b.get(op, "x", xt, s.N*s.C*s.H*s.W)
	if y == nil || x == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskShortcutForward, ew: elementTask[T]{a: y, b: x}, sc: s}, s.N)
}

// shortcutForwardPart computes samples [lo, hi) of ShortcutAForward. At
// stride 2 with the SIMD loops, each plane's even rows are split into
// their even columns, kept, and odd ones, dropped in ws.
func shortcutForwardPart[T Float](ws *workerScratch[T], v *vectorOps, y, x []T, s backend.ShortcutShape, lo, hi int) {
	oh, ow, pad := s.OutH(), s.OutW(), (s.OC-s.C)/2
	deinterleave := v.deinterleave
	var dropped []float32 // the odd columns
	if _, ok := any(x).([]float32); !ok || s.Stride != 2 {
		deinterleave = nil
	} else {
		dropped = ws.columnsF32(oh * ow)
	}
	for n := lo; n < hi; n++ {
		for o := 0; o < s.OC; o++ {
			dst := y[(n*s.OC+o)*oh*ow:][:oh*ow]
			c := o - pad
			if c < 0 || c >= s.C {
				clear(dst)
				continue
			}
			src := x[(n*s.C+c)*s.H*s.W:][:s.H*s.W]
			if deinterleave != nil {
				deinterleave(any(dst).([]float32), dropped, any(src).([]float32), oh, s.W, ow, 2*s.W)
				continue
			}
			for i := 0; i < oh; i++ {
				row, out := src[i*s.Stride*s.W:], dst[i*ow:][:ow]
				for j := range out {
					out[j] = row[j*s.Stride]
				}
			}
		}
	}
}

// ShortcutABackward is the transpose of ShortcutAForward.
func (b *Backend[T]) ShortcutABackward(dxt, dyt backend.Tensor, s backend.ShortcutShape) {
	const op = "ShortcutABackward"
	if !shortcutOK(s) {
		b.fail(&backend.SizeError{Op: op + " (bad shape: OC must be C plus an even number)", Arg: "shape", Need: s.C, Have: s.OC})
		return
	}
	oh, ow := s.OutH(), s.OutW()
	dx, dy := b.get(op, "dx", dxt, s.N*s.C*s.H*s.W), b.get(op, "dy", dyt, s.N*s.OC*oh*ow)
	if dx == nil || dy == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskShortcutBackward, ew: elementTask[T]{a: dx, b: dy}, sc: s}, s.N)
}

// shortcutBackwardPart computes samples [lo, hi) of ShortcutABackward.
func shortcutBackwardPart[T Float](ws *workerScratch[T], v *vectorOps, dx, dy []T, s backend.ShortcutShape, lo, hi int) {
	oh, ow, pad := s.OutH(), s.OutW(), (s.OC-s.C)/2
	if _, ok := any(dx).([]float32); ok && s.Stride == 2 && v.interleave != nil {
		// Even rows interleave dy's row with zeros; odd rows are zero.
		zeros := ws.columnsF32(ow)
		clear(zeros)
		for n := lo; n < hi; n++ {
			for c := 0; c < s.C; c++ {
				src := any(dy[(n*s.OC+c+pad)*oh*ow:][:oh*ow]).([]float32)
				dst := any(dx[(n*s.C+c)*s.H*s.W:][:s.H*s.W]).([]float32)
				v.interleave(dst, src, zeros, oh, s.W, 2*s.W, ow, 0)
				for r := 1; r < s.H; r += 2 {
					clear(dst[r*s.W:][:s.W])
				}
			}
		}
		return
	}
	clear(dx[lo*s.C*s.H*s.W : hi*s.C*s.H*s.W])
	for n := lo; n < hi; n++ {
		for c := 0; c < s.C; c++ {
			src := dy[(n*s.OC+c+pad)*oh*ow:][:oh*ow]
			dst := dx[(n*s.C+c)*s.H*s.W:][:s.H*s.W]
			for i := 0; i < oh; i++ {
				row, in := dst[i*s.Stride*s.W:], src[i*ow:][:ow]
				for j, v := range in {
					row[j*s.Stride] = v
				}
			}
		}
	}
}
