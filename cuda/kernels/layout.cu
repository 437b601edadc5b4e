// Channels-last (NHWC) activations: the transpose between NCHW and NHWC,
// and the NHWC twins of the pooling and shortcut kernels (pool.cu,
// shortcut.cu), which compute the same values in the same order. Batch
// norm's are in batchnorm.cu; bias add reuses its NCHW kernel with
// spatial = 1 (channel i % c).
//
// An NHWC tensor of N samples, C channels and S = H·W positions stores
// element (n, c, s) at (n·S + s)·C + c; NCHW at (n·C + c)·S + s. NHWC
// activations may be stored as bf16 or fp16 (storage.cuh): the transposes
// read any of the three types and write float32, the NHWC kernels come
// in all three.

#include "divide.cuh"
#include "storage.cuh"

#define TILE 32
#define TILE_ROWS 8

// dst[b][j][i] = src[b][i][j] for the batch of rows×cols matrices, b =
// blockIdx.z. Blocks of 32×8 threads move 32×32 tiles through shared
// memory (padded against bank conflicts), so reads and writes are both
// coalesced. NCHW → NHWC is rows = C, cols = S; NHWC → NCHW rows = S,
// cols = C.
template <class T> __device__ void transpose_batched(float* dst, const T* src, int rows, int cols) {
    __shared__ float tile[TILE][TILE + 1];
    long long base = (long long)blockIdx.z * rows * cols;
    int c0 = blockIdx.x * TILE, r0 = blockIdx.y * TILE;
    for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {
        int r = r0 + k, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[k][threadIdx.x] = load(src, base + (long long)r * cols + c);
    }
    __syncthreads();
    for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {
        int c = c0 + k, r = r0 + threadIdx.x;
        if (c < cols && r < rows) dst[base + (long long)c * rows + r] = tile[threadIdx.x][k];
    }
}
STORAGE_KERNELS(transpose_batched, (float* dst, const T* src, int rows, int cols), (dst, src, rows, cols))

// Rows of fewer than 8 values (NCHW → NHWC of an image's 1 to 7 colour
// channels): one thread per element of the output, reading src with a
// stride of cols, which the cache absorbs since a warp's 32 reads fall in
// `rows` lines. total = batch·rows·cols, below 2³¹ (reorderAt), so the
// index arithmetic is 32-bit unsigned, as in the kernels below, and its
// divisions are multiply-shifts (divide.cuh): a division costs several
// times as much, and these kernels are otherwise bound by memory.
template <class T>
__device__ void transpose_narrow(float* dst, const T* src, unsigned rows, unsigned cols, unsigned total, Divisor by_per, Divisor by_rows) {
    unsigned per = rows * cols;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned b = by_per.div(i), rem = i - b * per, j = by_rows.div(rem), r = rem - j * rows;
        dst[i] = load(src, b * per + r * cols + j);
    }
}
STORAGE_KERNELS(transpose_narrow,
                (float* dst, const T* src, unsigned rows, unsigned cols, unsigned total, unsigned per_mul, unsigned per_shift,
                 unsigned rows_mul, unsigned rows_shift),
                (dst, src, rows, cols, total, Divisor{per_mul, per_shift}, Divisor{rows_mul, rows_shift}))

// maxpool_fwd_f32 on NHWC x, y and argmax; argmax still holds the index
// iy*w + ix within the sample's H×W plane.
template <class T>
__device__ void maxpool_fwd_nhwc(T* y, float* argmax, const T* x, unsigned n, unsigned c, int h, int w, int k, int stride, int pad,
                                 unsigned oh, unsigned ow, Divisor by_c, Divisor by_ow, Divisor by_oh) {
    unsigned total = n * oh * ow * c;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned pix = by_c.div(i), ch = i - pix * c;
        unsigned row = by_ow.div(pix), ox = pix - row * ow;
        unsigned smp = by_oh.div(row), oy = row - smp * oh;
        const T* img = x + smp * (unsigned)(h * w) * c + ch;
        float best = 0.0f;
        int idx = -1;
        for (int ky = 0; ky < k; ky++) {
            int iy = (int)oy * stride - pad + ky;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; kx++) {
                int ix = (int)ox * stride - pad + kx;
                if (ix < 0 || ix >= w) continue;
                float v = load(img, (unsigned)(iy * w + ix) * c);
                if (idx < 0 || v > best) { best = v; idx = iy * w + ix; }
            }
        }
        store(y, i, best);
        argmax[i] = (float)idx;
    }
}
STORAGE_KERNELS(maxpool_fwd_nhwc,
                (T* y, float* argmax, const T* x, unsigned n, unsigned c, int h, int w, int k, int stride, int pad, unsigned oh, unsigned ow,
                 unsigned c_mul, unsigned c_shift, unsigned ow_mul, unsigned ow_shift, unsigned oh_mul, unsigned oh_shift),
                (y, argmax, x, n, c, h, w, k, stride, pad, oh, ow, Divisor{c_mul, c_shift}, Divisor{ow_mul, ow_shift},
                 Divisor{oh_mul, oh_shift}))

// maxpool_bwd_f32 on NHWC dx, dy and argmax: the same gather, the same
// order (output rows, then columns, ascending).
template <class T>
__device__ void maxpool_bwd_nhwc(T* dx, const T* dy, const float* argmax, unsigned n, unsigned c, int h, int w, int k, int stride, int pad,
                                 int oh, int ow, Divisor by_c, Divisor by_w, Divisor by_h, Divisor by_stride) {
    unsigned total = n * (unsigned)(h * w) * c;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned pix = by_c.div(i), ch = i - pix * c;
        unsigned row = by_w.div(pix), smp = by_h.div(row);
        int ix = (int)(pix - row * (unsigned)w), iy = (int)(row - smp * (unsigned)h);
        int ty = iy + pad - k + 1, tx = ix + pad - k + 1;
        int oy0 = ty <= 0 ? 0 : (int)by_stride.div(ty + stride - 1), oy1 = min(oh - 1, (int)by_stride.div(iy + pad));
        int ox0 = tx <= 0 ? 0 : (int)by_stride.div(tx + stride - 1), ox1 = min(ow - 1, (int)by_stride.div(ix + pad));
        float here = (float)(iy * w + ix), s = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++) {
            for (int ox = ox0; ox <= ox1; ox++) {
                unsigned o = ((smp * (unsigned)oh + (unsigned)oy) * (unsigned)ow + (unsigned)ox) * c + ch;
                if (argmax[o] == here) s += load(dy, o);
            }
        }
        store(dx, i, s);
    }
}
STORAGE_KERNELS(maxpool_bwd_nhwc,
                (T* dx, const T* dy, const float* argmax, unsigned n, unsigned c, int h, int w, int k, int stride, int pad, int oh, int ow,
                 unsigned c_mul, unsigned c_shift, unsigned w_mul, unsigned w_shift, unsigned h_mul, unsigned h_shift, unsigned stride_mul,
                 unsigned stride_shift),
                (dx, dy, argmax, n, c, h, w, k, stride, pad, oh, ow, Divisor{c_mul, c_shift}, Divisor{w_mul, w_shift},
                 Divisor{h_mul, h_shift}, Divisor{stride_mul, stride_shift}))

// y[n, c] = the mean over positions of NHWC x, summed in position order as
// gap_fwd_f32 does; neighbouring threads read neighbouring channels.
template <class T> __device__ void gap_fwd_nhwc(float* y, const T* x, int n, int c, int spatial) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n * c) return;
    int smp = p / c, ch = p % c;
    const T* img = x + (long long)smp * spatial * c + ch;
    float s = 0.0f;
    for (int i = 0; i < spatial; i++) s += load(img, (long long)i * c);
    y[p] = s / (float)spatial;
}
STORAGE_KERNELS(gap_fwd_nhwc, (float* y, const T* x, int n, int c, int spatial), (y, x, n, c, spatial))

// NHWC dx[n, s, c] = dy[n, c] / spatial.
template <class T>
__device__ void gap_bwd_nhwc(T* dx, const float* dy, unsigned n, unsigned c, unsigned spatial, Divisor by_per, Divisor by_c) {
    unsigned total = n * spatial * c;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned smp = by_per.div(i), ch = i - by_c.div(i) * c;
        store(dx, i, dy[smp * c + ch] / (float)spatial);
    }
}
STORAGE_KERNELS(gap_bwd_nhwc,
                (T* dx, const float* dy, unsigned n, unsigned c, unsigned spatial, unsigned per_mul, unsigned per_shift, unsigned c_mul,
                 unsigned c_shift),
                (dx, dy, n, c, spatial, Divisor{per_mul, per_shift}, Divisor{c_mul, c_shift}))

// shortcut_a_fwd_f32 on NHWC x and y.
template <class T>
__device__ void shortcut_a_fwd_nhwc(T* y, const T* x, unsigned n, int c, unsigned h, unsigned w, unsigned oc, unsigned stride, unsigned oh,
                                    unsigned ow, Divisor by_oc, Divisor by_ow, Divisor by_oh) {
    int pad = ((int)oc - c) / 2;
    unsigned total = n * oh * ow * oc;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned pix = by_oc.div(i), o = i - pix * oc;
        unsigned row = by_ow.div(pix), ox = pix - row * ow;
        unsigned smp = by_oh.div(row), oy = row - smp * oh;
        int ch = (int)o - pad;
        store(y, i, (ch >= 0 && ch < c) ? load(x, ((smp * h + oy * stride) * w + ox * stride) * (unsigned)c + (unsigned)ch) : 0.0f);
    }
}
STORAGE_KERNELS(shortcut_a_fwd_nhwc,
                (T* y, const T* x, unsigned n, int c, unsigned h, unsigned w, unsigned oc, unsigned stride, unsigned oh, unsigned ow,
                 unsigned oc_mul, unsigned oc_shift, unsigned ow_mul, unsigned ow_shift, unsigned oh_mul, unsigned oh_shift),
                (y, x, n, c, h, w, oc, stride, oh, ow, Divisor{oc_mul, oc_shift}, Divisor{ow_mul, ow_shift}, Divisor{oh_mul, oh_shift}))

// shortcut_a_bwd_f32 on NHWC dx and dy.
template <class T>
__device__ void shortcut_a_bwd_nhwc(T* dx, const T* dy, unsigned n, unsigned c, unsigned h, unsigned w, unsigned oc, unsigned stride,
                                    unsigned oh, unsigned ow, Divisor by_c, Divisor by_w, Divisor by_h, Divisor by_stride) {
    unsigned pad = (oc - c) / 2;
    unsigned total = n * h * w * c;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned pix = by_c.div(i), ch = i - pix * c;
        unsigned row = by_w.div(pix), ix = pix - row * w;
        unsigned smp = by_h.div(row), iy = row - smp * h;
        unsigned qy = by_stride.div(iy), qx = by_stride.div(ix);
        float v = 0.0f;
        if (qy * stride == iy && qx * stride == ix) {
            v = load(dy, ((smp * oh + qy) * ow + qx) * oc + ch + pad);
        }
        store(dx, i, v);
    }
}
STORAGE_KERNELS(shortcut_a_bwd_nhwc,
                (T* dx, const T* dy, unsigned n, unsigned c, unsigned h, unsigned w, unsigned oc, unsigned stride, unsigned oh, unsigned ow,
                 unsigned c_mul, unsigned c_shift, unsigned w_mul, unsigned w_shift, unsigned h_mul, unsigned h_shift, unsigned stride_mul,
                 unsigned stride_shift),
                (dx, dy, n, c, h, w, oc, stride, oh, ow, Divisor{c_mul, c_shift}, Divisor{w_mul, w_shift}, Divisor{h_mul, h_shift},
                 Divisor{stride_mul, stride_shift}))
