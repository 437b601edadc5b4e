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
	dotRows = 2 // output channels per kernel call
	dotCols = 6 // weight rows (c, kh, kw) per kernel call
	// filterGradGroup is about how many padded positions a group of
	// samples spans; filterGradChunk is how many of them one kernel call
	// covers (a multiple of 8), small enough for its rows to stay in L1.
	filterGradGroup = 2048
	filterGradChunk = 1024
)

// dotGo is the portable filter-gradient kernel, the reference for the
// assembly: acc[(j·dotRows+i)·8+l] += Σ_t dy_i[t·8+l]·x[offs[j]+t·8+l] for
// t < n8, dy_0 = dy0, dy_1 = dy1.
func dotGo(n8 int, dy0, dy1, x []float32, offs []int64, acc []float32) {
	dys := [dotRows][]float32{dy0, dy1}
	for j := 0; j < dotCols; j++ {
		xs := x[offs[j]:]
		for i, dy := range dys {
			lanes := acc[(j*dotRows+i)*8:][:8]
			for t := 0; t < n8; t++ {
				for l := range lanes {
					lanes[l] += dy[t*8+l] * xs[t*8+l]
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
	length := roundUp(span, 8)   // the row length of dyp
	cin := c1 - c0
	rows := cin * k * k
	rowsPad, ocPad := roundUp(rows, dotCols), roundUp(s.OC, dotRows)

	// x of the group, then room for the farthest shifted run to read
	// past its end.
	if need := cin*span + k*wp + k + 8; cap(ws.pad) < need {
		ws.pad = make([]float32, need)
	}
	xp := ws.pad[:cin*span+k*wp+k+8]
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
	acc := ws.columnsF32(ocPad * rowsPad * 8)
	clear(acc)
	kernel := b.dotKernel
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
		used := roundUp(gn*plane, 8)
		for ch := 0; ch < used; ch += filterGradChunk {
			n8 := min(filterGradChunk, used-ch) / 8
			for o := 0; o < ocPad; o += dotRows {
				dy0, dy1 := dyp[o*length+ch:], dyp[(o+1)*length+ch:]
				for r := 0; r < rowsPad; r += dotCols {
					blk := (o/dotRows)*(rowsPad/dotCols) + r/dotCols
					kernel(n8, dy0, dy1, xp[ch:], offs[r:r+dotCols], acc[blk*dotRows*dotCols*8:][:dotRows*dotCols*8])
				}
			}
		}
	}
	kk := s.C * k * k
	k0 := c0 * k * k
	for o := 0; o < s.OC; o++ {
		for r := 0; r < rows; r++ {
			blk := (o/dotRows)*(rowsPad/dotCols) + r/dotCols
			l := acc[(blk*dotRows*dotCols+(r%dotCols)*dotRows+o%dotRows)*8:][:8]
			dw[o*kk+k0+r] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
		}
	}
}
