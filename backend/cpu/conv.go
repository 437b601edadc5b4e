package cpu

import "iterbin/backend"

// Convolutions run as im2col + GEMM, one sample at a time, each worker
// building C·KH·KW × OH·OW columns in its own scratch.

func convOK(s backend.ConvShape) bool {
	return s.N >= 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.OC > 0 && s.KH > 0 && s.KW > 0 && s.Stride > 0 && s.Pad >= 0 && s.OutH() > 0 && s.OutW() > 0
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
	hi = min(ow, (w-1+pad-kw)/stride+1)
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

// Conv2DForward computes y = conv(x, w), y[n] = W·cols(x[n]); samples
// are shared between the workers.
func (b *Backend[T]) Conv2DForward(yt, xt, wt backend.Tensor, s backend.ConvShape) {
	in, out, k := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW
	ok, v := b.convArgs("Conv2DForward", s, [3]string{"y", "x", "w"}, [3]backend.Tensor{yt, xt, wt}, [3]int{s.N * out, s.N * in, s.OC * k})
	if !ok {
		return
	}
	t := convTask[T]{s: s, out: v[0], in: v[1], w: v[2]}
	if w, ok := any(v[2]).([]float32); ok {
		t.packedW = prepackA(b.packedW, matrix{data: w, ld: k}, s.OC, k, 1)
		b.packedW = t.packedW.packed
	}
	b.pool.run(b, task[T]{kind: taskConvForward, cv: t}, s.N)
}

func (b *Backend[T]) convForwardPart(ws *workerScratch[T], t convTask[T], lo, hi int) {
	s := t.s
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	for n := lo; n < hi; n++ {
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
	in, out, k := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW
	ok, v := b.convArgs("Conv2DBackwardData", s, [3]string{"dx", "dy", "w"}, [3]backend.Tensor{dxt, dyt, wt}, [3]int{s.N * in, s.N * out, s.OC * k})
	if !ok {
		return
	}
	t := convTask[T]{s: s, out: v[0], in: v[1], w: v[2]}
	if w, ok := any(v[2]).([]float32); ok {
		t.packedW = prepackA(b.packedW, matrix{data: w, ld: k, trans: true}, k, s.OC, 1)
		b.packedW = t.packedW.packed
	}
	b.pool.run(b, task[T]{kind: taskConvBackwardData, cv: t}, s.N)
}

func (b *Backend[T]) convBackwardDataPart(ws *workerScratch[T], t convTask[T], lo, hi int) {
	s := t.s
	in, out, k, p := s.C*s.H*s.W, s.OC*s.OutH()*s.OutW(), s.C*s.KH*s.KW, s.OutH()*s.OutW()
	for n := lo; n < hi; n++ {
		dx, dy := t.out[n*in:(n+1)*in], t.in[n*out:(n+1)*out]
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
			continue
		}
		cols := dst
		clear(dx)
		col2im(dx, cols, s)
	}
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
	b.pool.run(b, task[T]{kind: taskConvBackwardFilter, cv: convTask[T]{s: s, out: v[0], in: v[1], w: v[2]}}, s.C)
}

func (b *Backend[T]) convBackwardFilterPart(ws *workerScratch[T], t convTask[T], c0, c1 int) {
	s := t.s
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
	for p := 0; p < planes; p++ {
		plane := x[p*s.H*s.W : (p+1)*s.H*s.W]
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
	clear(dx)
	for p := 0; p < planes; p++ {
		plane := dx[p*s.H*s.W : (p+1)*s.H*s.W]
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
	y, a, c := b.get("Add", "y", yt, n), b.get("Add", "a", at, n), b.get("Add", "b", bt, n)
	if y == nil || a == nil || c == nil {
		return
	}
	b.pool.run(b, task[T]{kind: taskAdd, ew: elementTask[T]{a: y, b: a, c: c}}, blocks(n))
}

func addPart[T Float](y, a, c []T) {
	for i := range y {
		y[i] = a[i] + c[i]
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
	oh, ow, pad := s.OutH(), s.OutW(), (s.OC-s.C)/2
	y, x := b.get(op, "y", yt, s.N*s.OC*oh*ow), b.get(op, "x", xt, s.N*s.C*s.H*s.W)
	if y == nil || x == nil {
		return
	}
	for n := 0; n < s.N; n++ {
		for o := 0; o < s.OC; o++ {
			dst := y[(n*s.OC+o)*oh*ow:][:oh*ow]
			c := o - pad
			if c < 0 || c >= s.C {
				clear(dst)
				continue
			}
			src := x[(n*s.C+c)*s.H*s.W:]
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					dst[i*ow+j] = src[i*s.Stride*s.W+j*s.Stride]
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
	oh, ow, pad := s.OutH(), s.OutW(), (s.OC-s.C)/2
	dx, dy := b.get(op, "dx", dxt, s.N*s.C*s.H*s.W), b.get(op, "dy", dyt, s.N*s.OC*oh*ow)
	if dx == nil || dy == nil {
		return
	}
	clear(dx)
	for n := 0; n < s.N; n++ {
		for c := 0; c < s.C; c++ {
			src := dy[(n*s.OC+c+pad)*oh*ow:][:oh*ow]
			dst := dx[(n*s.C+c)*s.H*s.W:]
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					dst[i*s.Stride*s.W+j*s.Stride] = src[i*ow+j]
				}
			}
		}
	}
}
