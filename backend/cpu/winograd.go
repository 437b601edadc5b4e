package cpu

import "iterbin/backend"

// Winograd F(2×2, 3×3) convolutions, on processors with AVX-512: the
// forward pass, the input gradient and (from 4×4 images up) the filter
// gradient of 3×3, stride-1, padding-1 layers with even sizes and
// channels in multiples of 16 (every such layer of ResNet-20 and VGG-5
// but the first). A 2×2 block of outputs of one
// output channel takes 16 multiplies per input channel instead of 36:
//
//	Y = Aᵀ·[ Σ_c (G·g·Gᵀ) ⊙ (Bᵀ·d·B) ]·A
//
// with d the 4×4 input tile under the block and g the 3×3 filter (Lavin
// and Gray, "Fast algorithms for convolutional neural networks", 2016).
// For each of the 16 points ξ of the transformed tile, the sum over input
// channels is a matrix product, M_ξ (tiles × cout) = V_ξ (tiles × cin) ·
// U_ξ (cin × cout).
//
// Each worker takes whole samples. It copies a sample zero-padded and
// channels-last ([h+2][w+2][cin], as the filter gradients do, direct.go),
// so a tile's 16 inputs are 16-channel vectors; then, a few rows of tiles
// at a time so that V and M stay in cache, it transforms the tiles into V,
// multiplies, transforms M into 2×2 output blocks written channels-last,
// and transposes those rows into the output's NCHW planes. The filters are
// transformed once per op and shared.
//
// The transforms only add and subtract (G's halves are exact), so the
// errors stay those of a direct convolution's sums (the README gives the
// measurements); every order is fixed, so results do not depend on the
// number of workers.

// winogradKernels are the Winograd convolution's kernels; each does what
// its Go reference (winogradInputGo, winogradOutputGo, winogradGemmGo,
// winogradGradGo, winogradFilterGemmGo) does.
type winogradKernels struct {
	// lanes is the channels a vector holds (16 on AVX-512, 8 on AVX2),
	// name names the instruction set.
	lanes int
	name  string
	// transpose does what transposeGo does: the channels-last copies.
	transpose func(dst []float32, ldd int, src []float32, lds int, blocks int)
	input     func(n int, x []float32, xRow, xCol int, v []float32, vStep, vPlane int)
	output    func(n int, m []float32, mStep, mPlane int, y []float32, yRow, yCol int)
	gemm      func(blocks, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int)
	// grad and filterGemm serve filter gradients.
	grad       func(n int, dy []float32, dyRow, dyCol int, m []float32, mStep, mPlane int)
	filterGemm func(k, blocks int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int)
}

const (
	// winogradChannels: input and output channels come in multiples of
	// it (of either kernel set's lanes and of the 16×16 transposes).
	winogradChannels = 16
	winogradRows     = 8 // tiles (or filter-gradient rows) per block of the matrix products
	// winogradPlanePad is the floats between the 16 planes of V and of
	// M beyond their size: a cache line.
	winogradPlanePad = 16
	// winogradChunkFloats bounds V and M together, in floats, for one
	// chunk of tile rows: small enough to stay in a core's L2.
	winogradChunkFloats = 1 << 15
	// winogradGroup is how many samples' filter gradients are summed into
	// one partial sum, at least; the partial sums are then added in order.
	// It depends on the op's shape only, so the bits do not depend on the
	// number of workers.
	winogradGroup = 8
	// winogradPartialFloats bounds the partial sums of one op, in floats
	// (wide layers take larger groups).
	winogradPartialFloats = 1 << 23
)

// winogradOK says whether a float32 convolution's forward pass and input
// gradient run on the Winograd path.
func (b *Backend[T]) winogradOK(s backend.ConvShape) bool {
	return b.winograd != nil && s.KH == 3 && s.KW == 3 && s.Stride == 1 && s.Pad == 1 &&
		s.H%2 == 0 && s.W%2 == 0 && s.H > 0 && s.W > 0 &&
		s.C%winogradChannels == 0 && s.OC%winogradChannels == 0 && s.C > 0 && s.OC > 0
}

// winogradFilterOK says whether a float32 convolution's filter gradient
// runs on the Winograd path: as winogradOK, on images of at least 4×4.
// On a 2×2 image (one tile) a corner tap's one term comes out as a
// difference of whole-tile sums, with little relative accuracy left.
func (b *Backend[T]) winogradFilterOK(s backend.ConvShape) bool {
	return b.winogradOK(s) && s.H >= 4 && s.W >= 4
}

// winogradInputGo is the reference of the input transform: for tiles
// j < n and lanes l < lanes, with d[r][s] = x[2j·xCol + r·xRow + s·xCol + l],
// it sets v[ξ·vPlane + j·vStep + l] = (Bᵀ·d·B)[ξ/4][ξ%4], rows of d
// combined first.
func winogradInputGo(lanes, n int, x []float32, xRow, xCol int, v []float32, vStep, vPlane int) {
	for j := 0; j < n; j++ {
		for l := 0; l < lanes; l++ {
			var h [4][4]float32
			for r := 0; r < 4; r++ {
				var d [4]float32
				for s := range d {
					d[s] = x[2*j*xCol+r*xRow+s*xCol+l]
				}
				h[r] = [4]float32{d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]}
			}
			for s := 0; s < 4; s++ {
				o := j*vStep + l + s*vPlane
				v[o] = h[0][s] - h[2][s]
				v[o+4*vPlane] = h[1][s] + h[2][s]
				v[o+8*vPlane] = h[2][s] - h[1][s]
				v[o+12*vPlane] = h[1][s] - h[3][s]
			}
		}
	}
}

// winogradOutputGo is the reference of the output transform: for tiles
// j < n and lanes l < lanes, with m[ξ] = m[ξ·mPlane + j·mStep + l], it sets
// y[2j·yCol + a·yRow + b·yCol + l] = (Aᵀ·m·A)[a][b], rows of m combined
// first.
func winogradOutputGo(lanes, n int, m []float32, mStep, mPlane int, y []float32, yRow, yCol int) {
	for j := 0; j < n; j++ {
		for l := 0; l < lanes; l++ {
			var s0, s1 [4]float32
			for s := 0; s < 4; s++ {
				at := func(q int) float32 { return m[(4*q+s)*mPlane+j*mStep+l] }
				s0[s] = at(0) + at(1) + at(2)
				s1[s] = at(1) - at(2) - at(3)
			}
			o := 2*j*yCol + l
			y[o] = s0[0] + s0[1] + s0[2]
			y[o+yCol] = s0[1] - s0[2] - s0[3]
			y[o+yRow] = s1[0] + s1[1] + s1[2]
			y[o+yRow+yCol] = s1[1] - s1[2] - s1[3]
		}
	}
}

// winogradGemmGo is the reference of the matrix-product kernel:
// c[i·ldc + j] = Σ_p a[i·lda + p]·b[p·ldb + j] for i < 8·blocks and
// j < lanes, in p order.
func winogradGemmGo(lanes, blocks, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	for i := 0; i < winogradRows*blocks; i++ {
		row := c[i*ldc:][:lanes]
		clear(row)
		for p := 0; p < k; p++ {
			ap := a[i*lda+p]
			for j, bv := range b[p*ldb:][:lanes] {
				row[j] += float32(ap * bv)
			}
		}
	}
}

// winogradGradGo is the reference of the output-gradient transform, the
// adjoint of the output transform: for 2×2 blocks j < n and lanes l < lanes,
// with dy's block at dy[2j·dyCol + a·dyRow + b·dyCol + l], it sets
// m[ξ·mPlane + j·mStep + l] = (A·dy·Aᵀ)[ξ/4][ξ%4], rows first.
func winogradGradGo(lanes, n int, dy []float32, dyRow, dyCol int, m []float32, mStep, mPlane int) {
	for j := 0; j < n; j++ {
		for l := 0; l < lanes; l++ {
			o := 2*j*dyCol + l
			y00, y01, y10, y11 := dy[o], dy[o+dyCol], dy[o+dyRow], dy[o+dyRow+dyCol]
			rows := [4][2]float32{{y00, y01}, {y00 + y10, y01 + y11}, {y00 - y10, y01 - y11}, {-y10, -y11}}
			for q, r := range rows {
				p := m[4*q*mPlane+j*mStep+l:]
				p[0] = r[0]
				p[mPlane] = r[0] + r[1]
				p[2*mPlane] = r[0] - r[1]
				p[3*mPlane] = -r[1]
			}
		}
	}
}

// winogradFilterGemmGo is the reference of the filter gradients'
// matrix-product kernel: c[i·ldc + j] += Σ_p a[p·lda + i]·b[p·ldb + j]
// for i < 8 and j < lanes·blocks, in p order.
func winogradFilterGemmGo(lanes, k, blocks int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	for i := 0; i < winogradRows; i++ {
		row := c[i*ldc:][:lanes*blocks]
		for p := 0; p < k; p++ {
			ap := a[p*lda+i]
			for j, bv := range b[p*ldb:][:len(row)] {
				row[j] += float32(ap * bv)
			}
		}
	}
}

// winogradFilters sets u[ξ][c][o] = (G·g·Gᵀ)[ξ/4][ξ%4] for input
// channels c in [c0, c1) of a convolution from cin to cout channels, for
// its filters g = w[o][c] (cout×cin×3×3) or, with flip, the input
// gradient's g = w[c][o] turned by 180° (w is then cin×cout×3×3 in the
// forward layer's order, output channel first).
func winogradFilters(u, w []float32, cin, cout int, flip bool, c0, c1 int) {
	plane := cin * cout
	// A run of output channels is transformed into rows of buf, then each
	// row copied to its plane: stores straight to the 16 planes, a
	// multiple of 4 KiB apart, would fight over the same L1 sets.
	const run = 64
	var buf [16][run]float32
	for c := c0; c < c1; c++ {
		for o0 := 0; o0 < cout; o0 += run {
			n := min(run, cout-o0)
			for o := 0; o < n; o++ {
				var g [9]float32
				if flip {
					f := w[(c*cout+o0+o)*9:][:9]
					for i := range g {
						g[i] = f[8-i]
					}
				} else {
					g = [9]float32(w[((o0+o)*cin+c)*9:][:9])
				}
				// G·g, column by column: g's rows 0 and 2, their half sum
				// and difference with row 1; then the same across columns.
				var gg [4][3]float32
				for j := 0; j < 3; j++ {
					a, b, e := g[j], g[3+j], g[6+j]
					gg[0][j] = a
					gg[1][j] = (a + b + e) * 0.5
					gg[2][j] = (a - b + e) * 0.5
					gg[3][j] = e
				}
				for q, r := range gg {
					buf[4*q][o] = r[0]
					buf[4*q+1][o] = (r[0] + r[1] + r[2]) * 0.5
					buf[4*q+2][o] = (r[0] - r[1] + r[2]) * 0.5
					buf[4*q+3][o] = r[2]
				}
			}
			for xi := range buf {
				copy(u[xi*plane+c*cout+o0:][:n], buf[xi][:n])
			}
		}
	}
}

// transformFilters sets the backend's winogradU for a convolution from
// cin to cout channels (see winogradFilters), the workers sharing the
// input channels.
func (b *Backend[T]) transformFilters(w []float32, cin, cout int, flip bool) {
	b.winogradU = grow(b.winogradU, 16*cin*cout)
	b.pool.run(b, task[T]{kind: taskWinogradFilters, wf: winogradFilterTask{w: w, cin: cin, cout: cout, flip: flip}}, cin)
}

// winogradPadding is the geometry of a worker's channels-last padded
// sample; see winogradPadded.
type winogradPadding struct{ cin, h, w int }

// winogradPadded copies the sample x (cin×h×w) into the worker's
// zero-padded channels-last buffer, [h+2][w+2][cin], and returns it. The
// padding is zeroed when the geometry changes; samples only overwrite the
// interior.
func (b *Backend[T]) winogradPadded(ws *workerScratch[T], x []float32, cin, h, w int) []float32 {
	if ws.winogradGeom != (winogradPadding{cin, h, w}) {
		ws.winogradPad = grow(ws.winogradPad, (h+2)*(w+2)*cin)
		clear(ws.winogradPad)
		ws.winogradGeom = winogradPadding{cin, h, w}
	}
	var tmp []float32
	if w < 16 {
		tmp = ws.matrixBuf(cin * h * w)
	}
	padChannelsLast(b.winograd.transpose, ws.winogradPad, x, tmp, cin, h, w, 1)
	return ws.winogradPad
}

// inputRows transforms rows [ti0, ti0+rows) of tiles (tw a row) of the
// channels-last padded sample xp, rows wp positions of cin channels, into
// V: tile t of the chunk, channel c, point ξ at v[ξ·vPlane + t·cin + c].
func (k *winogradKernels) inputRows(xp []float32, ti0, rows, tw, wp, cin int, v []float32, vPlane int) {
	for r := 0; r < rows; r++ {
		for c0 := 0; c0 < cin; c0 += k.lanes {
			k.input(tw, xp[2*(ti0+r)*wp*cin+c0:], wp*cin, cin, v[r*tw*cin+c0:], cin, vPlane)
		}
	}
}

// winogradChunk returns the tiles per row and rows of tiles of an h×w
// image, and how many rows of tiles one chunk holds so that its
// transformed tiles and products (16·(cin+cout) floats a tile) stay in
// cache.
func winogradChunk(cin, cout, h, w int) (tw, th, chunkRows int) {
	tw, th = w/2, h/2
	return tw, th, max(1, min(th, winogradChunkFloats/(16*(cin+cout)*tw)))
}

// winogradConv computes one sample y (cout×h×w) of the 3×3, stride-1,
// padding-1 convolution of x (cin×h×w) with filters transformed into u by
// winogradFilters.
func (b *Backend[T]) winogradConv(ws *workerScratch[T], u []float32, cin, cout, h, w int, x, y []float32) {
	k := b.winograd
	wp := w + 2
	xp := b.winogradPadded(ws, x, cin, h, w)
	tw, th, chunkRows := winogradChunk(cin, cout, h, w)
	tiles8 := roundUp(chunkRows*tw, winogradRows)
	// The 16 planes of V and of M are a cache line more than their size
	// apart: at a multiple of 4 KiB they would share the L1 sets their
	// tiles are written to and read from.
	vPlane, mPlane := tiles8*cin+winogradPlanePad, tiles8*cout+winogradPlanePad
	ws.winogradV = grow(ws.winogradV, 16*vPlane)
	ws.winogradM = grow(ws.winogradM, 16*mPlane)
	ws.winogradY = grow(ws.winogradY, 2*chunkRows*w*cout)
	v, m, yc := ws.winogradV, ws.winogradM, ws.winogradY
	for ti0 := 0; ti0 < th; ti0 += chunkRows {
		rows := min(chunkRows, th-ti0)
		blocks := (rows*tw + winogradRows - 1) / winogradRows
		k.inputRows(xp, ti0, rows, tw, wp, cin, v, vPlane)
		for xi := 0; xi < 16; xi++ {
			for o0 := 0; o0 < cout; o0 += k.lanes {
				k.gemm(blocks, cin, v[xi*vPlane:], cin, u[xi*cin*cout+o0:], cout, m[xi*mPlane+o0:], cout)
			}
		}
		for r := 0; r < rows; r++ {
			for o0 := 0; o0 < cout; o0 += k.lanes {
				k.output(tw, m[r*tw*cout+o0:], cout, mPlane, yc[2*r*w*cout+o0:], w*cout, cout)
			}
		}
		transposeRows(k.transpose, y[2*ti0*w:], h*w, yc, cout, 2*rows*w, cout)
	}
}

// Filter gradients on the Winograd path. The gradient of U_ξ is Σ_tiles
// V_ξᵀ·dM_ξ, with dM = A·dy·Aᵀ the adjoint of the output transform on
// each 2×2 block of the output gradient; the filters' gradient is then
// Gᵀ·dU·G. Samples go in groups (of winogradGroup, more in wide layers:
// winogradFilterGroups), one group to a worker at a time, each summed in
// order into its own partial dU; winogradFilterFinish adds the partial
// sums in group order and transforms them.

// winogradFilterGroups returns how many samples a group of a filter
// gradient's samples holds, and how many groups there are.
func winogradFilterGroups(s backend.ConvShape) (size, groups int) {
	most := max(1, winogradPartialFloats/(16*s.C*s.OC))
	size = max(winogradGroup, (s.N+most-1)/most)
	return size, (s.N + size - 1) / size
}

// winogradFilterPart computes the partial dU of sample groups [lo, hi)
// into the backend's winogradPartials.
func (b *Backend[T]) winogradFilterPart(ws *workerScratch[T], t convTask[float32], lo, hi int) {
	s, k := t.s, b.winograd
	cin, cout, h, w := s.C, s.OC, s.H, s.W
	size := 16 * cin * cout
	wp := w + 2
	tw, th, chunkRows := winogradChunk(cin, cout, h, w)
	tiles := chunkRows * tw
	vPlane, mPlane := tiles*cin+winogradPlanePad, tiles*cout+winogradPlanePad
	ws.winogradV = grow(ws.winogradV, 16*vPlane)
	ws.winogradM = grow(ws.winogradM, 16*mPlane)
	ws.winogradY = grow(ws.winogradY, h*w*cout)
	v, m, dyc := ws.winogradV, ws.winogradM, ws.winogradY
	in, out := cin*h*w, cout*h*w
	group, _ := winogradFilterGroups(s)
	for g := lo; g < hi; g++ {
		du := b.winogradPartials[g*size:][:size]
		clear(du)
		for n := g * group; n < min(s.N, (g+1)*group); n++ {
			// The input x travels in the w slot.
			xp := b.winogradPadded(ws, t.w[n*in:(n+1)*in], cin, h, w)
			transposeRows(k.transpose, dyc, cout, t.in[n*out:(n+1)*out], h*w, cout, h*w)
			for ti0 := 0; ti0 < th; ti0 += chunkRows {
				rows := min(chunkRows, th-ti0)
				k.inputRows(xp, ti0, rows, tw, wp, cin, v, vPlane)
				for r := 0; r < rows; r++ {
					for o0 := 0; o0 < cout; o0 += k.lanes {
						k.grad(tw, dyc[2*(ti0+r)*w*cout+o0:], w*cout, cout, m[r*tw*cout+o0:], cout, mPlane)
					}
				}
				for xi := 0; xi < 16; xi++ {
					for c0 := 0; c0 < cin; c0 += winogradRows {
						k.filterGemm(rows*tw, cout/k.lanes, v[xi*vPlane+c0:], cin, m[xi*mPlane:], cout, du[(xi*cin+c0)*cout:], cout)
					}
				}
			}
		}
	}
}

// winogradFilterFinish sets the filter gradients dw[o][c] (cout×cin×3×3)
// of input channels [c0, c1): the groups' partial dU added in group
// order, then Gᵀ·dU·G.
func (b *Backend[T]) winogradFilterFinish(ws *workerScratch[T], t convTask[float32], c0, c1 int) {
	s := t.s
	cin, cout := s.C, s.OC
	size := 16 * cin * cout
	_, groups := winogradFilterGroups(s)
	add := b.vec.add
	if add == nil {
		add = addPart[float32]
	}
	sum := ws.columnsF32(16 * cout)
	for c := c0; c < c1; c++ {
		for xi := 0; xi < 16; xi++ {
			row := sum[xi*cout:][:cout]
			copy(row, b.winogradPartials[(xi*cin+c)*cout:][:cout])
			for g := 1; g < groups; g++ {
				add(row, row, b.winogradPartials[g*size+(xi*cin+c)*cout:][:cout])
			}
		}
		for o := 0; o < cout; o++ {
			var du [4][4]float32
			for xi := 0; xi < 16; xi++ {
				du[xi/4][xi%4] = sum[xi*cout+o]
			}
			// Gᵀ·dU, then ·G: rows (and then columns) 1 and 2 halved
			// and summed, or subtracted.
			var r [3][4]float32
			for j := 0; j < 4; j++ {
				p, q := du[1][j]*0.5, du[2][j]*0.5
				r[0][j] = du[0][j] + (p + q)
				r[1][j] = p - q
				r[2][j] = (p + q) + du[3][j]
			}
			dw := t.out[(o*cin+c)*9:][:9]
			for i, v := range r {
				p, q := v[1]*0.5, v[2]*0.5
				dw[3*i] = v[0] + (p + q)
				dw[3*i+1] = p - q
				dw[3*i+2] = (p + q) + v[3]
			}
		}
	}
}
