package cpu

import "iterbin/backend"

// The filter gradient of a stride-1 convolution, dw[o][c,kh,kw] =
// Σ_n Σ_(i,j) dy[n,o,i,j]·x[n,c,i+kh−pad,j+kw−pad], is a set of dot
// products between rows of dy and shifted rows of the padded input. The
// samples of a group are laid out one after another with shared padding:
// rows of x are wp = w+pad apart (a row's right padding is the next row's
// left padding) and samples h+pad rows apart (a sample's bottom padding
// is the next one's top), so x is [c][n][h+pad][w+pad], and dy is
// [o][n][h+pad][w+pad] with zeros outside the output. Each weight is then
// one dot product over the group's positions, between a row of dy and the
// run of x that starts at c·span + kh·wp + kw. The kernel reads both in
// place, so nothing is transposed or packed; it keeps 8-lane partial sums
// per weight across every group and chunk, and the lanes are added once
// at the end. The order of every sum depends on the shape only, never on
// the workers.

const (
	// filterGradGroup is about how many padded positions a group of
	// samples spans; filterGradChunk is how many of them one kernel call
	// covers (a multiple of every kernel's lanes), small enough for its
	// rows to stay in L1.
	filterGradGroup = 2048
	filterGradChunk = 1024
)

// dotGo is the portable filter-gradient kernel, the reference for the
// assembly: for i < rows, j < cols and l < lanes,
// acc[(j·rows+i)·lanes+l] += Σ_t dy[i·ldy+t·lanes+l]·x[offs[j]+t·lanes+l]
// over t < n, in t order.
func dotGo(rows, cols, lanes, n int, dy []float32, ldy int, x []float32, offs []int64, acc []float32) {
	for j := 0; j < cols; j++ {
		xs := x[offs[j]:]
		for i := 0; i < rows; i++ {
			d := dy[i*ldy:]
			sums := acc[(j*rows+i)*lanes:][:lanes]
			for t := 0; t < n; t++ {
				for l := range sums {
					sums[l] += d[t*lanes+l] * xs[t*lanes+l]
				}
			}
		}
	}
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }

// implicitFilterGrad sets the columns of dw (OC × C·k·k) of input channels
// [c0, c1) of a stride-1 convolution with a square kernel.
func (b *Backend[T]) implicitFilterGrad(ws *workerScratch[T], s backend.ConvShape, dw, dy, x []float32, c0, c1 int) {
	k, pad := s.KH, s.Pad
	wp := s.W + pad // row stride: padding shared by neighbouring rows
	oh, ow := s.OutH(), s.OutW()
	plane := (s.H + pad) * wp // sample stride: padding shared by neighbouring samples
	group := max(1, filterGradGroup/plane)
	span := group*plane + pad*wp // a channel: the group and the last sample's bottom padding
	dot := b.dot
	length := roundUp(span, dot.lanes) // the row length of dyp
	cin := c1 - c0
	rows := cin * k * k
	rowsPad, ocPad := roundUp(rows, dot.cols), roundUp(s.OC, dot.rows)
	block := dot.rows * dot.cols * dot.lanes // partial sums of one kernel call

	// x of the group, then room for the farthest shifted run to read
	// past its end.
	need := cin*span + k*wp + k + dot.lanes
	if cap(ws.pad) < need {
		ws.pad = make([]float32, need)
	}
	xp := ws.pad[:need]
	if cap(ws.offs) < rowsPad {
		ws.offs = make([]int64, rowsPad)
	}
	offs := ws.offs[:rowsPad]
	for c := 0; c < cin; c++ {
		for i := 0; i < k; i++ {
			for j := 0; j < k; j++ {
				offs[(c*k+i)*k+j] = int64(c*span + i*wp + j)
			}
		}
	}
	for r := rows; r < rowsPad; r++ {
		offs[r] = offs[rows-1] // computed and dropped
	}
	dyp := ws.matrixBuf(ocPad * length)
	acc := ws.columnsF32(ocPad * rowsPad * dot.lanes)
	clear(acc)
	in, out := s.C*s.H*s.W, s.OC*oh*ow
	for n0 := 0; n0 < s.N; n0 += group {
		gn := min(group, s.N-n0)
		clear(xp)
		clear(dyp)
		for n := n0; n < n0+gn; n++ {
			xs, ds := x[n*in:(n+1)*in], dy[n*out:(n+1)*out]
			for c := c0; c < c1; c++ {
				base := (c-c0)*span + (n-n0)*plane + pad*wp + pad // row pad, column pad
				for r := 0; r < s.H; r++ {
					copy(xp[base+r*wp:][:s.W], xs[(c*s.H+r)*s.W:][:s.W])
				}
			}
			for o := 0; o < s.OC; o++ {
				base := o*length + (n-n0)*plane
				for r := 0; r < oh; r++ {
					copy(dyp[base+r*wp:][:ow], ds[(o*oh+r)*ow:][:ow])
				}
			}
		}
		used := roundUp(gn*plane, dot.lanes)
		for ch := 0; ch < used; ch += filterGradChunk {
			n := min(filterGradChunk, used-ch) / dot.lanes
			for o := 0; o < ocPad; o += dot.rows {
				for r := 0; r < rowsPad; r += dot.cols {
					blk := (o/dot.rows)*(rowsPad/dot.cols) + r/dot.cols
					dot.run(n, dyp[o*length+ch:], length, xp[ch:], offs[r:r+dot.cols], acc[blk*block:][:block])
				}
			}
		}
	}
	kk := s.C * k * k
	k0 := c0 * k * k
	for o := 0; o < s.OC; o++ {
		for r := 0; r < rows; r++ {
			blk := (o/dot.rows)*(rowsPad/dot.cols) + r/dot.cols
			dw[o*kk+k0+r] = sumLanes(acc[blk*block+((r%dot.cols)*dot.rows+o%dot.rows)*dot.lanes:][:dot.lanes])
		}
	}
}

// sumLanes adds partial sums pairwise: (l0+l1)+(l2+l3), and so on up.
func sumLanes(l []float32) float32 {
	var pair [16]float32
	n := copy(pair[:], l)
	for n > 1 {
		for i := 0; i < n/2; i++ {
			pair[i] = pair[2*i] + pair[2*i+1]
		}
		n /= 2
	}
	return pair[0]
}
