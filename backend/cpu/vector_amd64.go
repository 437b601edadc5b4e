package cpu

import "golang.org/x/sys/cpu"

// Implemented in vector_amd64.s; each runs over n8·8 elements, n8 ≥ 1.

//go:noescape
func reluAVX2(y, x *float32, n8 int)

//go:noescape
func reluBackwardAVX2(dx, dy, y *float32, n8 int)

//go:noescape
func addAVX2(y, a, b *float32, n8 int)

//go:noescape
func sumF64AVX2(x *float32, n8 int) float64

//go:noescape
func sumSqDevF64AVX2(x *float32, n8 int, mu float64) float64

//go:noescape
func dySumsF64AVX2(dy, xhat *float32, n8 int) (sumDy, sumDyXhat float64)

//go:noescape
func bnNormalizeAVX2(y, xhat, x *float32, n8 int, mu, inv, gamma, beta float32)

//go:noescape
func bnDxAVX2(dx, dy, xhat *float32, n8 int, m, sumDy, sumDyXhat, k float32)

//go:noescape
func bnNormalizeReLUAVX2(y, x *float32, n8 int, mu, inv, gamma, beta float32)

//go:noescape
func dySumsReLUF64AVX2(dy, x *float32, n8 int, mu, inv, gamma, beta float32) (sumDy, sumDyXhat float64)

//go:noescape
func bnDxReLUAVX2(dx, dy, x *float32, n8 int, mu, inv, gamma, beta, m, sumDy, sumDyXhat, k float32)

//go:noescape
func addReLUAVX2(y, a, b *float32, n8 int)

//go:noescape
func bnNormalizeAddReLUAVX2(y, x, skip *float32, n8 int, mu, inv, gamma, beta float32)

//go:noescape
func dySumsMaskedF64AVX2(dSum, dy, out, x *float32, n8 int, mu, inv float32) (sumDy, sumDyXhat float64)

//go:noescape
func bnDxRecomputeAVX2(dx, dy, x *float32, n8 int, mu, inv, m, sumDy, sumDyXhat, k float32)

//go:noescape
func maxPool2x2AVX2(y, arg, r0, r1, idx *float32, n8 int, w float32)

//go:noescape
func adamAVX2(w, grad, m1, m2 *float32, n8 int, b1, c1, b2, c2, bc2Sqrt, eps, stepSize, wd float32)

//go:noescape
func addScalarAVX2(y *float32, n8 int, b float32)

//go:noescape
func padRowsAVX2(dst, src *float32, rows, w8, wp, pad int)

//go:noescape
func deinterleaveAVX2(even, odd, src *float32, rows, n8, ld, ls int)

//go:noescape
func interleaveAVX2(dst, even, odd *float32, rows, n8, ld, le, lo int)

// simdVectorOps returns the AVX2 loops when the processor has AVX2 and
// FMA. Each wrapper checks its slices' lengths, runs the multiple of 8 in
// assembly and the rest in Go.
func simdVectorOps() vectorOps {
	if !cpu.X86.HasAVX2 || !cpu.X86.HasFMA {
		return vectorOps{}
	}
	return vectorOps{
		maxPool2x2: func(y, arg, r0, r1 []float32, col, w int) {
			n := len(y) / 8 * 8
			if n > 0 {
				_, _ = r0[2*n-1], r1[2*n-1]
				_ = arg[n-1]
				var idx [8]float32
				for k := range idx {
					idx[k] = float32(col + 2*k)
				}
				maxPool2x2AVX2(&y[0], &arg[0], &r0[0], &r1[0], &idx[0], n/8, float32(w))
			}
			maxPool2x2Part(y[n:], arg[n:], r0[2*n:], r1[2*n:], col+2*n, w)
		},
		addScalar: func(y []float32, b float32) {
			n := len(y) / 8 * 8
			if n > 0 {
				addScalarAVX2(&y[0], n/8, b)
			}
			for i := n; i < len(y); i++ {
				y[i] += b
			}
		},
		adam: func(w, g, m, v []float32, p adamConsts[float32]) {
			g, m, v = g[:len(w)], m[:len(w)], v[:len(w)]
			n := len(w) / 8 * 8
			if n > 0 {
				adamAVX2(&w[0], &g[0], &m[0], &v[0], n/8, p.b1, p.c1, p.b2, p.c2, p.bc2Sqrt, p.eps, p.stepSize, p.wd)
			}
			adamLoop(w[n:], g[n:], m[n:], v[n:], p)
		},
		deinterleave: func(even, odd, src []float32, rows, w, ld, ls int) {
			w16 := w / 16 * 16 // the columns in assembly
			if rows > 0 && w16 > 0 && ld >= w16/2 && ls >= w {
				_, _ = even[(rows-1)*ld+w16/2-1], odd[(rows-1)*ld+w16/2-1] // the last rows' ends, checked
				_ = src[(rows-1)*ls+w16-1]
				deinterleaveAVX2(&even[0], &odd[0], &src[0], rows, w16/16, ld, ls)
			} else {
				w16 = 0
			}
			if w > w16 {
				deinterleavePart(even[w16/2:], odd[w16/2:], src[w16:], rows, w-w16, ld, ls)
			}
		},
		interleave: func(dst, even, odd []float32, rows, w, ld, le, lo int) {
			w16 := w / 16 * 16
			if rows > 0 && w16 > 0 && ld >= w && le >= 0 && lo >= 0 { // even and odd rows may be one row, read again
				_ = dst[(rows-1)*ld+w16-1]
				_, _ = even[(rows-1)*le+w16/2-1], odd[(rows-1)*lo+w16/2-1]
				interleaveAVX2(&dst[0], &even[0], &odd[0], rows, w16/16, ld, le, lo)
			} else {
				w16 = 0
			}
			if w > w16 {
				interleavePart(dst[w16:], even[w16/2:], odd[w16/2:], rows, w-w16, ld, le, lo)
			}
		},
		padRows: func(dst, src []float32, rows, w, wp, pad int) {
			if rows <= 0 || w <= 0 || w%8 != 0 || pad < 0 || wp < pad+w {
				padRowsPart(dst, src, rows, w, wp, pad)
				return
			}
			_ = dst[(rows-1)*wp+pad+w-1] // the last row's end, checked
			_ = src[rows*w-1]
			padRowsAVX2(&dst[0], &src[0], rows, w/8, wp, pad)
		},
		relu: func(y, x []float32) {
			y = y[:len(x)]
			n := len(x) / 8 * 8
			if n > 0 {
				reluAVX2(&y[0], &x[0], n/8)
			}
			reluPart(y[n:], x[n:])
		},
		reluBackward: func(dx, dy, y []float32) {
			dx, dy = dx[:len(y)], dy[:len(y)]
			n := len(y) / 8 * 8
			if n > 0 {
				reluBackwardAVX2(&dx[0], &dy[0], &y[0], n/8)
			}
			reluBackwardPart(dx[n:], dy[n:], y[n:])
		},
		add: func(y, a, b []float32) {
			a, b = a[:len(y)], b[:len(y)]
			n := len(y) / 8 * 8
			if n > 0 {
				addAVX2(&y[0], &a[0], &b[0], n/8)
			}
			addPart(y[n:], a[n:], b[n:])
		},
		sum: func(x []float32) float64 {
			n := len(x) / 8 * 8
			var s float64
			if n > 0 {
				s = sumF64AVX2(&x[0], n/8)
			}
			for _, v := range x[n:] {
				s += float64(v)
			}
			return s
		},
		sumSqDev: func(x []float32, mu float64) float64 {
			n := len(x) / 8 * 8
			var s float64
			if n > 0 {
				s = sumSqDevF64AVX2(&x[0], n/8, mu)
			}
			for _, v := range x[n:] {
				d := float64(v) - mu
				s += d * d
			}
			return s
		},
		normalizeAddReLU: func(y, x, skip []float32, mu, inv, gamma, beta float32) {
			y, skip = y[:len(x)], skip[:len(x)]
			n := len(x) / 8 * 8
			if n > 0 {
				bnNormalizeAddReLUAVX2(&y[0], &x[0], &skip[0], n/8, mu, inv, gamma, beta)
			}
			for i := n; i < len(x); i++ {
				y[i] = relu(float32(gamma*((x[i]-mu)*inv)) + beta + skip[i])
			}
		},
		dySumsMasked: func(dSum, dy, out, x []float32, mu, inv float32) (float64, float64) {
			dSum, out, x = dSum[:len(dy)], out[:len(dy)], x[:len(dy)]
			n := len(dy) / 8 * 8
			var s, sx float64
			if n > 0 {
				s, sx = dySumsMaskedF64AVX2(&dSum[0], &dy[0], &out[0], &x[0], n/8, mu, inv)
			}
			for i := n; i < len(dy); i++ {
				h := (x[i] - mu) * inv
				v := masked(dy[i], out[i])
				dSum[i] = v
				s += float64(v)
				sx += float64(v) * float64(h)
			}
			return s, sx
		},
		bnDxRecompute: func(dx, dy, x []float32, mu, inv, m, sumDy, sumDyXhat, k float32) {
			dx, x = dx[:len(dy)], x[:len(dy)]
			n := len(dy) / 8 * 8
			if n > 0 {
				bnDxRecomputeAVX2(&dx[0], &dy[0], &x[0], n/8, mu, inv, m, sumDy, sumDyXhat, k)
			}
			for i := n; i < len(dy); i++ {
				h := (x[i] - mu) * inv
				dx[i] = k * (float32(m*dy[i]) - sumDy - float32(h*sumDyXhat))
			}
		},
		dySums: func(dy, xhat []float32) (float64, float64) {
			xhat = xhat[:len(dy)]
			n := len(dy) / 8 * 8
			var s, sx float64
			if n > 0 {
				s, sx = dySumsF64AVX2(&dy[0], &xhat[0], n/8)
			}
			for i, v := range dy[n:] {
				s += float64(v)
				sx += float64(v) * float64(xhat[n+i])
			}
			return s, sx
		},
		normalize: func(y, xhat, x []float32, mu, inv, gamma, beta float32) {
			y, xhat = y[:len(x)], xhat[:len(x)]
			n := len(x) / 8 * 8
			if n > 0 {
				bnNormalizeAVX2(&y[0], &xhat[0], &x[0], n/8, mu, inv, gamma, beta)
			}
			for i := n; i < len(x); i++ {
				h := (x[i] - mu) * inv
				xhat[i] = h
				y[i] = float32(gamma*h) + beta
			}
		},
		normalizeReLU: func(y, x []float32, mu, inv, gamma, beta float32) {
			y = y[:len(x)]
			n := len(x) / 8 * 8
			if n > 0 {
				bnNormalizeReLUAVX2(&y[0], &x[0], n/8, mu, inv, gamma, beta)
			}
			for i := n; i < len(x); i++ {
				y[i] = relu(float32(gamma*((x[i]-mu)*inv)) + beta)
			}
		},
		dySumsReLU: func(dy, x []float32, mu, inv, gamma, beta float32) (float64, float64) {
			x = x[:len(dy)]
			n := len(dy) / 8 * 8
			var s, sx float64
			if n > 0 {
				s, sx = dySumsReLUF64AVX2(&dy[0], &x[0], n/8, mu, inv, gamma, beta)
			}
			for i := n; i < len(dy); i++ {
				h := (x[i] - mu) * inv
				v := masked(dy[i], float32(gamma*h)+beta)
				s += float64(v)
				sx += float64(v) * float64(h)
			}
			return s, sx
		},
		bnDxReLU: func(dx, dy, x []float32, mu, inv, gamma, beta, m, sumDy, sumDyXhat, k float32) {
			dx, x = dx[:len(dy)], x[:len(dy)]
			n := len(dy) / 8 * 8
			if n > 0 {
				bnDxReLUAVX2(&dx[0], &dy[0], &x[0], n/8, mu, inv, gamma, beta, m, sumDy, sumDyXhat, k)
			}
			for i := n; i < len(dy); i++ {
				h := (x[i] - mu) * inv
				dx[i] = k * (float32(m*masked(dy[i], float32(gamma*h)+beta)) - sumDy - float32(h*sumDyXhat))
			}
		},
		addReLU: func(y, a, b []float32) {
			a, b = a[:len(y)], b[:len(y)]
			n := len(y) / 8 * 8
			if n > 0 {
				addReLUAVX2(&y[0], &a[0], &b[0], n/8)
			}
			for i := n; i < len(y); i++ {
				y[i] = relu(a[i] + b[i])
			}
		},
		bnDx: func(dx, dy, xhat []float32, m, sumDy, sumDyXhat, k float32) {
			dx, xhat = dx[:len(dy)], xhat[:len(dy)]
			n := len(dy) / 8 * 8
			if n > 0 {
				bnDxAVX2(&dx[0], &dy[0], &xhat[0], n/8, m, sumDy, sumDyXhat, k)
			}
			for i := n; i < len(dy); i++ {
				dx[i] = k * (float32(m*dy[i]) - sumDy - float32(xhat[i]*sumDyXhat))
			}
		},
	}
}
