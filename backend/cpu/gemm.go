package cpu

// The float32 GEMM: a packed, blocked GEMM in the Goto/BLIS layout. A is
// packed into panels of mr rows, B into panels of nr columns, and a
// micro-kernel computes each mr×nr tile of C over a kc-long slice of k. On
// amd64 processors with AVX2 and FMA the micro-kernel is assembly
// (kernel_amd64.s); elsewhere it is kernelGo, the reference loop.
//
// Every element of C is accumulated in the same order (kc blocks in
// order, k in order within a block) whichever worker computes it, so
// results do not depend on the number of threads.

const (
	mr = 6   // rows of a micro-tile
	nr = 16  // columns of a micro-tile
	kc = 256 // k per packed block
	mc = 120 // rows of A packed at once (a multiple of mr)
	nc = 2048
	// maxPanel is the most rows of a convolution kernel's tile (the
	// AVX-512 implicit-convolution kernel's 8).
	maxPanel = 8
)

// kernelGo is the portable micro-kernel, the reference for the assembly:
// c[i·ldc+j] = Σ_p a[p·mr+i]·b[p·nr+j] for i < mr, j < nr, or c[i·ldc+j] +=
// that sum when add.
func kernelGo(k int, a, b, c []float32, ldc int, add bool) {
	var acc [mr * nr]float32
	for p := 0; p < k; p++ {
		ap := a[p*mr : p*mr+mr]
		bp := b[p*nr : p*nr+nr]
		for i, av := range ap {
			row := acc[i*nr : i*nr+nr]
			for j, bv := range bp {
				row[j] += av * bv
			}
		}
	}
	storeTile(acc[:], c, ldc, add)
}

// kernelOffsetsGo is the portable implicit-B micro-kernel: row p of B is
// b[offs[p]:offs[p]+nr].
func kernelOffsetsGo(k int, a, b []float32, offs []int64, c []float32, ldc int, add bool) {
	kernelOffsetsRowsGo(mr, k, a, b, offs, c, ldc, add)
}

// kernelOffsetsRowsGo is kernelOffsetsGo over a panel of rows ≤ maxPanel
// rows, the reference for every implicit-B kernel.
func kernelOffsetsRowsGo(rows, k int, a, b []float32, offs []int64, c []float32, ldc int, add bool) {
	var acc [maxPanel * nr]float32
	for p := 0; p < k; p++ {
		ap := a[p*rows : p*rows+rows]
		bp := b[offs[p] : offs[p]+nr]
		for i, av := range ap {
			row := acc[i*nr : i*nr+nr]
			for j, bv := range bp {
				row[j] += av * bv
			}
		}
	}
	storeTile(acc[:rows*nr], c, ldc, add)
}

// kernelOffsets2RowsGo is kernelOffsetsRowsGo for outputs nr/2 wide:
// row p of B is b[offs[p]:][:nr/2] followed by b[offs[p]+gap:][:nr/2],
// the same positions of two output rows gap floats apart.
func kernelOffsets2RowsGo(rows, k int, a, b []float32, offs []int64, gap int, c []float32, ldc int, add bool) {
	var acc [maxPanel * nr]float32
	var bp [nr]float32
	for p := 0; p < k; p++ {
		copy(bp[:nr/2], b[offs[p]:][:nr/2])
		copy(bp[nr/2:], b[int(offs[p])+gap:][:nr/2])
		for i, av := range a[p*rows : p*rows+rows] {
			row := acc[i*nr : i*nr+nr]
			for j, bv := range bp {
				row[j] += av * bv
			}
		}
	}
	storeTile(acc[:rows*nr], c, ldc, add)
}

// storeTile writes (or adds) a tile of len(tile)/nr rows to rows of c ldc
// apart.
func storeTile(tile, c []float32, ldc int, add bool) {
	for i := 0; i < len(tile)/nr; i++ {
		dst, src := c[i*ldc:][:nr], tile[i*nr:][:nr]
		if !add {
			copy(dst, src)
			continue
		}
		for j, v := range src {
			dst[j] += v
		}
	}
}

// gemmScratch holds one worker's packing buffers.
type gemmScratch struct {
	packA []float32 // mc × kc
	packB []float32 // kc × nc
	tile  []float32 // up to maxPanel × nr
}

func newGemmScratch() *gemmScratch {
	return &gemmScratch{packA: make([]float32, mc*kc), packB: make([]float32, kc*nc), tile: make([]float32, maxPanel*nr)}
}

// matrix is a row-major matrix view with a transpose flag: element (i, j)
// of op(M) is data[i*ld+j], or data[j*ld+i] when trans. An A operand may
// instead be prepacked (see prepackA): packed holds its panels of panel
// rows for every kc block, mPad rows (m rounded up to panel) each.
type matrix struct {
	data   []float32
	ld     int
	trans  bool
	packed []float32
	mPad   int
	panel  int
	// rowOffs, when set (untransposed A only), places row i at
	// data[rowOffs[i]:] instead of data[i·ld:]: an implicit matrix whose
	// rows overlap (shifted rows of a padded image).
	rowOffs []int64
}

func (m matrix) row(i int) int {
	if m.rowOffs != nil {
		return int(m.rowOffs[i])
	}
	return i * m.ld
}

// prepackA packs all of op(A) (m×k) once, scaled by alpha, into dst (grown
// as needed), for GEMMs that reuse A (a convolution's weights over every
// sample).
func prepackA(dst []float32, a matrix, m, k int, alpha float32, panel int) matrix {
	mPad := roundUp(m, panel)
	if cap(dst) < mPad*k {
		dst = make([]float32, mPad*k)
	}
	dst = dst[:mPad*k]
	for pc := 0; pc < k; pc += kc {
		kLen := min(kc, k-pc)
		packA(dst[pc*mPad:], a, 0, m, pc, kLen, alpha, panel)
	}
	return matrix{packed: dst, mPad: mPad, panel: panel}
}

// packA packs rows [i0, i0+rows) and k range [p0, p0+kLen) of op(A) into
// panels of panel rows, scaled by alpha; rows past the end are zero.
func packA(dst []float32, a matrix, i0, rows, p0, kLen int, alpha float32, panel int) {
	for r0 := 0; r0 < rows; r0 += panel {
		out := dst[r0*kLen : (r0+panel)*kLen]
		h := min(panel, rows-r0)
		if a.trans {
			// Row p of the stored matrix holds op(A)'s column p.
			for p := 0; p < kLen; p++ {
				src := a.data[(p0+p)*a.ld+i0+r0:][:h]
				col := out[p*panel : p*panel+panel]
				for r, v := range src {
					col[r] = alpha * v
				}
				clear(col[h:])
			}
			continue
		}
		for r := 0; r < panel; r++ {
			if r >= h {
				for p := 0; p < kLen; p++ {
					out[p*panel+r] = 0
				}
				continue
			}
			for p, v := range a.data[a.row(i0+r0+r)+p0:][:kLen] {
				out[p*panel+r] = alpha * v
			}
		}
	}
}

// packB packs k range [p0, p0+kLen) and columns [j0, j0+cols) of op(B)
// into panels of nr columns; columns past the end are zero.
func packB(dst []float32, b matrix, p0, kLen, j0, cols int) {
	for c0 := 0; c0 < cols; c0 += nr {
		panel := dst[c0*kLen : (c0+nr)*kLen]
		w := min(nr, cols-c0)
		if !b.trans {
			for p := 0; p < kLen; p++ {
				row := panel[p*nr : p*nr+nr]
				copy(row[:w], b.data[(p0+p)*b.ld+j0+c0:][:w])
				clear(row[w:])
			}
			continue
		}
		// Transposed: column c of op(B) is a contiguous stored row.
		for c := 0; c < nr; c++ {
			if c >= w {
				for p := 0; p < kLen; p++ {
					panel[p*nr+c] = 0
				}
				continue
			}
			for p, v := range b.data[(j0+c0+c)*b.ld+p0:][:kLen] {
				panel[p*nr+c] = v
			}
		}
	}
}

// sgemmSerial computes rows [i0, i1) × columns [j0, j1) of
// C = alpha·op(A)·op(B) + beta·C on one thread (alpha is already in a
// prepacked A; i0 must then be a multiple of mr).
func (b *Backend[T]) sgemmSerial(s *gemmScratch, a, bm matrix, k int, alpha, beta float32, c []float32, ldc, i0, i1, j0, j1 int) {
	if beta != 1 {
		for i := i0; i < i1; i++ {
			row := c[i*ldc+j0 : i*ldc+j1]
			if beta == 0 {
				clear(row)
			} else {
				for j := range row {
					row[j] *= beta
				}
			}
		}
	}
	kernel := b.kernel
	for jc := j0; jc < j1; jc += nc {
		cols := min(nc, j1-jc)
		for pc := 0; pc < k; pc += kc {
			kLen := min(kc, k-pc)
			packB(s.packB, bm, pc, kLen, jc, cols)
			for ic := i0; ic < i1; ic += mc {
				rows := min(mc, i1-ic)
				pa := s.packA
				if a.packed != nil {
					pa = a.packed[pc*a.mPad+ic*kLen:]
				} else {
					packA(s.packA, a, ic, rows, pc, kLen, alpha, mr)
				}
				for jr := 0; jr < cols; jr += nr {
					bp := s.packB[jr*kLen : (jr+nr)*kLen]
					w := min(nr, cols-jr)
					for ir := 0; ir < rows; ir += mr {
						h := min(mr, rows-ir)
						if h == mr && w == nr {
							kernel(kLen, pa[ir*kLen:(ir+mr)*kLen], bp, c[(ic+ir)*ldc+jc+jr:], ldc, true)
							continue
						}
						kernel(kLen, pa[ir*kLen:(ir+mr)*kLen], bp, s.tile, nr, false)
						for i := 0; i < h; i++ {
							dst := c[(ic+ir+i)*ldc+jc+jr:][:w]
							src := s.tile[i*nr : i*nr+w]
							for j, v := range src {
								dst[j] += v
							}
						}
					}
				}
			}
		}
	}
}

// sgemm splits C between the workers by columns (or rows, when C is
// narrow) and runs sgemmSerial on each part.
func (b *Backend[T]) sgemm(transA, transB bool, m, n, k int, alpha float32, a, bb []float32, beta float32, c []float32) {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	am, bmat := matrix{data: a, ld: lda, trans: transA}, matrix{data: bb, ld: ldb, trans: transB}
	workers := b.pool.size()
	if workers == 1 || m*n*k < 1<<16 {
		b.sgemmSerial(b.pool.scratch(0).gemm, am, bmat, k, alpha, beta, c, n, 0, m, 0, n)
		return
	}
	t := task[T]{kind: taskGemm, gm: gemmTask{a: am, b: bmat, k: k, alpha: alpha, beta: beta, c: c, m: m, n: n}}
	if n >= workers*nr*2 || n >= m {
		t.gm.splitCols = true
		b.pool.run(b, t, (n+nr-1)/nr)
	} else {
		b.pool.run(b, t, (m+mr-1)/mr)
	}
}

// gemmTask is the part of a task that describes a parallel GEMM; lo and hi
// count nr-column (or mr-row) strips.
type gemmTask struct {
	a, b        matrix
	k, m, n     int
	alpha, beta float32
	c           []float32
	splitCols   bool
}

func (b *Backend[T]) runGemmPart(s *workerScratch[T], g gemmTask, lo, hi int) {
	if g.splitCols {
		b.sgemmSerial(s.gemm, g.a, g.b, g.k, g.alpha, g.beta, g.c, g.n, 0, g.m, lo*nr, min(hi*nr, g.n))
		return
	}
	b.sgemmSerial(s.gemm, g.a, g.b, g.k, g.alpha, g.beta, g.c, g.n, lo*mr, min(hi*mr, g.m), 0, g.n)
}
