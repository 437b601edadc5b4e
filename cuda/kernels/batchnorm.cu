// Batch norm over N×C×spatial, PyTorch semantics: biased variance to
// normalize, unbiased variance in the running statistics.
//
// Channel ch's values are N rows of `spatial` contiguous floats, row i at
// (i*C + ch)*spatial. Training runs in three launches:
//   1. partial sums: a C×P grid, block (ch, p) sums its share of the rows
//      (each warp a row at a time, lanes along it) in double, reduced in a
//      fixed order, into partials[ch*P + p];
//   2. per channel, the P partials summed in order (statistics, or the
//      gradient sums);
//   3. elementwise: one block per row (i, ch).
// Every sum has a fixed order, so results do not depend on timing. The
// fused variants (bn_relu_*) apply ReLU after the affine transform, keep no
// xhat, and recompute xhat and the ReLU mask in the backward pass from x.

#include "storage.cuh"

#define STATS_THREADS 256

// block_sum2 returns the block's sums of a and b (every thread gets them);
// the order is fixed: lanes by shuffles, then warps in order.
__device__ double2 block_sum2(double a, double b) {
    __shared__ double2 warp_sums[STATS_THREADS / 32];
    for (int k = 16; k > 0; k >>= 1) {
        a += __shfl_down_sync(0xffffffffu, a, k);
        b += __shfl_down_sync(0xffffffffu, b, k);
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) warp_sums[warp] = make_double2(a, b);
    __syncthreads();
    double2 s = make_double2(0.0, 0.0);
    for (int w = 0; w < (int)(blockDim.x / 32); w++) {
        s.x += warp_sums[w].x;
        s.y += warp_sums[w].y;
    }
    __syncthreads();
    return s;
}

// Rows [row_lo, row_hi) of block (ch, p) in a C×P grid.
__device__ void block_rows(int n, int* row_lo, int* row_hi) {
    int p = blockIdx.y, parts = gridDim.y;
    *row_lo = (int)((long long)p * n / parts);
    *row_hi = (int)((long long)(p + 1) * n / parts);
}

// partials[ch*P + p] = (Σx, Σx²) over block (ch, p)'s rows.
extern "C" __global__ void bn_stats_partial_f32(double2* partials, const float* x, int n, int c, int spatial) {
    int ch = blockIdx.x, lo, hi;
    block_rows(n, &lo, &hi);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    double s = 0.0, sq = 0.0;
    for (int i = lo + warp; i < hi; i += warps) {
        const float* row = x + ((long long)i * c + ch) * spatial;
        for (int j = lane; j < spatial; j += 32) {
            double v = row[j];
            s += v;
            sq += v * v;
        }
    }
    double2 t = block_sum2(s, sq);
    if (threadIdx.x == 0) partials[ch * gridDim.y + blockIdx.y] = t;
}

// Per channel: mean and 1/sqrt(var+eps) from the partials, and the running
// statistics updated.
extern "C" __global__ void bn_stats_final_f32(float* mean, float* inv_std, float* run_mean, float* run_var,
                                              const double2* partials, int parts, int c, int m,
                                              float momentum, float eps) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s = 0.0, sq = 0.0;
    for (int p = 0; p < parts; p++) {
        s += partials[ch * parts + p].x;
        sq += partials[ch * parts + p].y;
    }
    double mu = s / m;
    double var = sq / m - mu * mu;
    if (var < 0.0) var = 0.0;
    float inv = (float)(1.0 / sqrt(var + (double)eps));
    float muf = (float)mu;
    mean[ch] = muf;
    inv_std[ch] = inv;
    run_mean[ch] = (1.0f - momentum) * run_mean[ch] + momentum * muf;
    run_var[ch] = (1.0f - momentum) * run_var[ch] + momentum * (float)(var * m / (m - 1));
}

// One block per row (i, ch): xhat = (x−mean)·inv_std, y = γ·xhat + β.
extern "C" __global__ void bn_apply_f32(float* y, float* xhat, const float* x, const float* mean, const float* inv_std,
                                        const float* gamma, const float* beta, int c, int spatial) {
    long long row = blockIdx.x;
    int ch = (int)(row % c);
    float mu = mean[ch], inv = inv_std[ch], g = gamma[ch], b = beta[ch];
    long long base = row * spatial;
    for (int j = threadIdx.x; j < spatial; j += blockDim.x) {
        float h = (x[base + j] - mu) * inv;
        xhat[base + j] = h;
        y[base + j] = g * h + b;
    }
}

// bn_apply_f32 followed by ReLU, without xhat.
extern "C" __global__ void bn_relu_apply_f32(float* y, const float* x, const float* mean, const float* inv_std,
                                             const float* gamma, const float* beta, int c, int spatial) {
    long long row = blockIdx.x;
    int ch = (int)(row % c);
    float mu = mean[ch], inv = inv_std[ch], g = gamma[ch], b = beta[ch];
    long long base = row * spatial;
    for (int j = threadIdx.x; j < spatial; j += blockDim.x) {
        float h = (x[base + j] - mu) * inv;
        float v = g * h + b;
        y[base + j] = v > 0.0f ? v : 0.0f;
    }
}

// Evaluation, elementwise over N×C×spatial (NCHW; bn_eval_nhwc below).
extern "C" __global__ void bn_eval_f32(float* y, const float* x, const float* gamma, const float* beta,
                                       const float* run_mean, const float* run_var,
                                       int n, int c, int spatial, float eps) {
    long long total = (long long)n * c * spatial;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        int ch = (int)((i / spatial) % c);
        float inv = (float)(1.0 / sqrt((double)run_var[ch] + (double)eps));
        float scale = gamma[ch] * inv;
        y[i] = x[i] * scale + (beta[ch] - run_mean[ch] * scale);
    }
}

// partials[ch*P + p] = (Σdy, Σdy·xhat) over block (ch, p)'s rows.
extern "C" __global__ void bn_bwd_partial_f32(double2* partials, const float* dy, const float* xhat, int n, int c, int spatial) {
    int ch = blockIdx.x, lo, hi;
    block_rows(n, &lo, &hi);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    double s = 0.0, sx = 0.0;
    for (int i = lo + warp; i < hi; i += warps) {
        long long base = ((long long)i * c + ch) * spatial;
        for (int j = lane; j < spatial; j += 32) {
            double d = dy[base + j];
            s += d;
            sx += d * xhat[base + j];
        }
    }
    double2 t = block_sum2(s, sx);
    if (threadIdx.x == 0) partials[ch * gridDim.y + blockIdx.y] = t;
}

// The same sums for batch norm + ReLU: dy masked where the ReLU's input was
// not positive, xhat recomputed from x.
extern "C" __global__ void bn_relu_bwd_partial_f32(double2* partials, const float* dy, const float* x,
                                                   const float* mean, const float* inv_std,
                                                   const float* gamma, const float* beta, int n, int c, int spatial) {
    int ch = blockIdx.x, lo, hi;
    block_rows(n, &lo, &hi);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    float mu = mean[ch], inv = inv_std[ch], g = gamma[ch], b = beta[ch];
    double s = 0.0, sx = 0.0;
    for (int i = lo + warp; i < hi; i += warps) {
        long long base = ((long long)i * c + ch) * spatial;
        for (int j = lane; j < spatial; j += 32) {
            float h = (x[base + j] - mu) * inv;
            float v = g * h + b;
            double d = v > 0.0f ? dy[base + j] : 0.0f;
            s += d;
            sx += d * h;
        }
    }
    double2 t = block_sum2(s, sx);
    if (threadIdx.x == 0) partials[ch * gridDim.y + blockIdx.y] = t;
}

// Per channel: dβ = Σdy, dγ = Σdy·xhat from the partials.
extern "C" __global__ void bn_bwd_final_f32(float* dgamma, float* dbeta, const double2* partials, int parts, int c) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s = 0.0, sx = 0.0;
    for (int p = 0; p < parts; p++) {
        s += partials[ch * parts + p].x;
        sx += partials[ch * parts + p].y;
    }
    dbeta[ch] = (float)s;
    dgamma[ch] = (float)sx;
}

// One block per row: dx = γ·inv_std/m · (m·dy − Σdy − xhat·Σdy·xhat).
extern "C" __global__ void bn_bwd_apply_f32(float* dx, const float* dy, const float* xhat, const float* inv_std,
                                            const float* gamma, const float* dgamma, const float* dbeta,
                                            int c, int spatial, int m) {
    long long row = blockIdx.x;
    int ch = (int)(row % c);
    float k = gamma[ch] * inv_std[ch] / (float)m;
    float fs = dbeta[ch], fsx = dgamma[ch], fm = (float)m;
    long long base = row * spatial;
    for (int j = threadIdx.x; j < spatial; j += blockDim.x) {
        dx[base + j] = k * (fm * dy[base + j] - fs - xhat[base + j] * fsx);
    }
}

// The same for batch norm + ReLU, with the mask and xhat recomputed.
extern "C" __global__ void bn_relu_bwd_apply_f32(float* dx, const float* dy, const float* x, const float* mean,
                                                 const float* inv_std, const float* gamma, const float* beta,
                                                 const float* dgamma, const float* dbeta, int c, int spatial, int m) {
    long long row = blockIdx.x;
    int ch = (int)(row % c);
    float mu = mean[ch], inv = inv_std[ch], g = gamma[ch], b = beta[ch];
    float k = g * inv / (float)m;
    float fs = dbeta[ch], fsx = dgamma[ch], fm = (float)m;
    long long base = row * spatial;
    for (int j = threadIdx.x; j < spatial; j += blockDim.x) {
        float h = (x[base + j] - mu) * inv;
        float v = g * h + b;
        float d = v > 0.0f ? dy[base + j] : 0.0f;
        dx[base + j] = k * (fm * d - fs - h * fsx);
    }
}

// Channels-last (NHWC) batch norm: channel ch's values are the m = N·spatial
// rows of c contiguous floats, row r's at r*c + ch. Every kernel takes V
// neighbouring channels of a row at a time (a Pack, storage.cuh): V = 1
// in name_f32 and the like, VecWidth in name_vec_f32 and the like, for c
// a multiple of it. The partial sums run on a grid of chunks × P parts;
// a block is up to 32 lanes, a pack each, so that a warp reads
// neighbouring channels of one row (coalesced), by a power of two of
// rows, each thread taking every such row of its part in order; the
// rows' sums are then added in a fixed tree (nhwc_partial). The P
// partials of a channel are reduced by one warp in a fixed order
// (nhwc_final), so here too no sum depends on timing. The elementwise
// passes are one thread per pack in a grid-stride loop whose step is a
// multiple of c/V packs (nhwc_span), so each thread keeps its channels
// and their parameters in registers instead of dividing for every
// element. Every element is computed the same way whatever V is; the
// partial sums' order depends on V and the block's shape only. The activations (x, y,
// xhat, dy, dx, skip, dsum) are stored as float32, bf16 or fp16
// (storage.cuh); parameters, statistics and sums are float32 and double
// either way.

// The most threads in a block of an NHWC partial-sum kernel.
#define NHWC_THREADS 256

// nhwc_partial writes partials[ch*P + p] = the two sums f adds for channel
// ch over block (chunk, p)'s rows. A block is blockDim.x lanes, each a
// pack of V neighbouring channels (Pack, storage.cuh), by blockDim.y rows
// (a power of two; at most NHWC_THREADS threads in all): each thread sums
// every blockDim.y-th row of the part in order, then the block's rows are
// combined in a fixed tree.
template <int V, class F>
__device__ void nhwc_partial(double2* partials, int m, int c, F f) {
    __shared__ double2 part[NHWC_THREADS][V];
    int pk = blockIdx.x * blockDim.x + threadIdx.x, t = threadIdx.y * blockDim.x + threadIdx.x, lo, hi;
    block_rows(m, &lo, &hi);
    int packs = c / V;
    double a[V], b[V];
    for (int k = 0; k < V; k++) a[k] = 0.0, b[k] = 0.0;
    if (pk < packs) {
        for (int r = lo + threadIdx.y; r < hi; r += blockDim.y) f.add((long long)r * packs + pk, pk * V, a, b);
    }
    for (int k = 0; k < V; k++) part[t][k] = make_double2(a[k], b[k]);
    for (int half = blockDim.y / 2; half > 0; half /= 2) {
        __syncthreads();
        if ((int)threadIdx.y < half) {
            for (int k = 0; k < V; k++) {
                part[t][k].x += part[t + half * blockDim.x][k].x;
                part[t][k].y += part[t + half * blockDim.x][k].y;
            }
        }
    }
    if (threadIdx.y == 0 && pk < packs) {
        for (int k = 0; k < V; k++) partials[(pk * V + k) * gridDim.y + blockIdx.y] = part[t][k];
    }
}

// nhwc_final returns, to lane 0 of the warp given channel ch, the sum of
// its parts partials: lanes take every 32nd, then shuffles combine them in
// a fixed order.
__device__ double2 nhwc_final(const double2* partials, int parts, int ch) {
    int lane = threadIdx.x % 32;
    double a = 0.0, b = 0.0;
    for (int p = lane; p < parts; p += 32) {
        a += partials[ch * parts + p].x;
        b += partials[ch * parts + p].y;
    }
    for (int k = 16; k > 0; k >>= 1) {
        a += __shfl_down_sync(0xffffffffu, a, k);
        b += __shfl_down_sync(0xffffffffu, b, k);
    }
    return make_double2(a, b);
}

// The warp's channel in a grid of whole warps, one warp per channel; -1 for
// the warps past the last.
__device__ int warp_channel(int c) {
    int ch = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32);
    return ch < c ? ch : -1;
}

// nhwc_span is a thread's share of an elementwise pass over an NHWC tensor
// of c channels (or of c packs of channels): elements (packs) first,
// first + step, … below the total, all of channel (pack) ch. step is the
// largest multiple of c the grid's threads cover; the threads past it
// (fewer than c) have none (active false). A grid of at least c threads
// covers every element.
struct NHWCSpan {
    unsigned first, step;
    int ch;
    bool active;
};

__device__ NHWCSpan nhwc_span(int c) {
    unsigned threads = gridDim.x * blockDim.x, t = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned step = threads / (unsigned)c * (unsigned)c;
    NHWCSpan sp;
    sp.first = t;
    sp.step = step;
    sp.ch = (int)(t % (unsigned)c);
    sp.active = t < step;
    return sp;
}

// The terms of the partial sums, a pack at a time: add adds pack pk's
// (channels ch0 … ch0+V-1) to a and b.

// (Σx, Σx²).
template <class T, int V> struct StatsTerms {
    const T* x;
    __device__ void add(long long pk, int, double (&a)[V], double (&b)[V]) const {
        Pack<T, V> xv = ((const Pack<T, V>*)x)[pk];
        for (int k = 0; k < V; k++) {
            double v = load(xv.v, k);
            a[k] += v;
            b[k] += v * v;
        }
    }
};

// (Σdy, Σdy·xhat).
template <class T, int V> struct BwdTerms {
    const T* dy;
    const T* xhat;
    __device__ void add(long long pk, int, double (&a)[V], double (&b)[V]) const {
        Pack<T, V> dv = ((const Pack<T, V>*)dy)[pk], hv = ((const Pack<T, V>*)xhat)[pk];
        for (int k = 0; k < V; k++) {
            double d = load(dv.v, k);
            a[k] += d;
            b[k] += d * load(hv.v, k);
        }
    }
};

// (Σd, Σd·xhat), d = dy where γ·xhat + β > 0, xhat recomputed from x.
template <class T, int V> struct ReLUBwdTerms {
    const T *dy, *x;
    const float *mean, *inv_std, *gamma, *beta;
    __device__ void add(long long pk, int ch0, double (&a)[V], double (&b)[V]) const {
        Pack<T, V> dv = ((const Pack<T, V>*)dy)[pk], xv = ((const Pack<T, V>*)x)[pk];
        for (int k = 0; k < V; k++) {
            int ch = ch0 + k;
            float h = (load(xv.v, k) - mean[ch]) * inv_std[ch];
            float v = gamma[ch] * h + beta[ch];
            double d = v > 0.0f ? load(dv.v, k) : 0.0f;
            a[k] += d;
            b[k] += d * h;
        }
    }
};

template <class T, int V> __device__ void bn_stats_partial_nhwc(double2* partials, const T* x, int m, int c) {
    nhwc_partial<V>(partials, m, c, StatsTerms<T, V>{x});
}
STORAGE_VEC_KERNELS(bn_stats_partial_nhwc, (double2* partials, const T* x, int m, int c), (partials, x, m, c))

template <class T, int V> __device__ void bn_bwd_partial_nhwc(double2* partials, const T* dy, const T* xhat, int m, int c) {
    nhwc_partial<V>(partials, m, c, BwdTerms<T, V>{dy, xhat});
}
STORAGE_VEC_KERNELS(bn_bwd_partial_nhwc, (double2* partials, const T* dy, const T* xhat, int m, int c), (partials, dy, xhat, m, c))

template <class T, int V>
__device__ void bn_relu_bwd_partial_nhwc(double2* partials, const T* dy, const T* x, const float* mean, const float* inv_std,
                                         const float* gamma, const float* beta, int m, int c) {
    nhwc_partial<V>(partials, m, c, ReLUBwdTerms<T, V>{dy, x, mean, inv_std, gamma, beta});
}
STORAGE_VEC_KERNELS(bn_relu_bwd_partial_nhwc,
                    (double2* partials, const T* dy, const T* x, const float* mean, const float* inv_std, const float* gamma,
                     const float* beta, int m, int c),
                    (partials, dy, x, mean, inv_std, gamma, beta, m, c))

// bn_stats_final_f32 with a warp per channel.
extern "C" __global__ void bn_stats_final_warp_f32(float* mean, float* inv_std, float* run_mean, float* run_var,
                                                   const double2* partials, int parts, int c, int m,
                                                   float momentum, float eps) {
    int ch = warp_channel(c);
    if (ch < 0) return;
    double2 t = nhwc_final(partials, parts, ch);
    if (threadIdx.x % 32 != 0) return;
    double mu = t.x / m;
    double var = t.y / m - mu * mu;
    if (var < 0.0) var = 0.0;
    float inv = (float)(1.0 / sqrt(var + (double)eps));
    float muf = (float)mu;
    mean[ch] = muf;
    inv_std[ch] = inv;
    run_mean[ch] = (1.0f - momentum) * run_mean[ch] + momentum * muf;
    run_var[ch] = (1.0f - momentum) * run_var[ch] + momentum * (float)(var * m / (m - 1));
}

// bn_bwd_final_f32 with a warp per channel.
extern "C" __global__ void bn_bwd_final_warp_f32(float* dgamma, float* dbeta, const double2* partials, int parts, int c) {
    int ch = warp_channel(c);
    if (ch < 0) return;
    double2 t = nhwc_final(partials, parts, ch);
    if (threadIdx.x % 32 != 0) return;
    dbeta[ch] = (float)t.x;
    dgamma[ch] = (float)t.y;
}

// dbias[ch] = the first sums of the partials (Σdy, from bn_stats_partial_nhwc_f32).
extern "C" __global__ void bias_grad_final_warp_f32(float* dbias, const double2* partials, int parts, int c) {
    int ch = warp_channel(c);
    if (ch < 0) return;
    double2 t = nhwc_final(partials, parts, ch);
    if (threadIdx.x % 32 == 0) dbias[ch] = (float)t.x;
}

// bn_params loads the batch-norm parameters of the V channels from ch0 on.
template <int V>
__device__ void bn_params(int ch0, const float* mean, const float* inv_std, const float* gamma, const float* beta, float (&mu)[V],
                          float (&inv)[V], float (&g)[V], float (&b)[V]) {
    for (int k = 0; k < V; k++) mu[k] = mean[ch0 + k], inv[k] = inv_std[ch0 + k], g[k] = gamma[ch0 + k], b[k] = beta[ch0 + k];
}

template <class T, int V>
__device__ void bn_apply_nhwc(T* y, T* xhat, const T* x, const float* mean, const float* inv_std, const float* gamma,
                              const float* beta, int c, int total) {
    NHWCSpan sp = nhwc_span(c / V);
    if (!sp.active) return;
    float mu[V], inv[V], g[V], b[V];
    bn_params(sp.ch * V, mean, inv_std, gamma, beta, mu, inv, g, b);
    typedef Pack<T, V> P;
    for (unsigned i = sp.first; i < (unsigned)(total / V); i += sp.step) {
        P xv = ((const P*)x)[i], hv, yv;
        for (int k = 0; k < V; k++) {
            float h = (load(xv.v, k) - mu[k]) * inv[k];
            store(hv.v, k, h);
            store(yv.v, k, g[k] * h + b[k]);
        }
        ((P*)xhat)[i] = hv;
        ((P*)y)[i] = yv;
    }
}
STORAGE_VEC_KERNELS(bn_apply_nhwc,
                    (T* y, T* xhat, const T* x, const float* mean, const float* inv_std, const float* gamma, const float* beta, int c,
                     int total),
                    (y, xhat, x, mean, inv_std, gamma, beta, c, total))

template <class T, int V>
__device__ void bn_relu_apply_nhwc(T* y, const T* x, const float* mean, const float* inv_std, const float* gamma, const float* beta,
                                   int c, int total) {
    NHWCSpan sp = nhwc_span(c / V);
    if (!sp.active) return;
    float mu[V], inv[V], g[V], b[V];
    bn_params(sp.ch * V, mean, inv_std, gamma, beta, mu, inv, g, b);
    typedef Pack<T, V> P;
    for (unsigned i = sp.first; i < (unsigned)(total / V); i += sp.step) {
        P xv = ((const P*)x)[i], yv;
        for (int k = 0; k < V; k++) {
            float h = (load(xv.v, k) - mu[k]) * inv[k];
            float v = g[k] * h + b[k];
            store(yv.v, k, v > 0.0f ? v : 0.0f);
        }
        ((P*)y)[i] = yv;
    }
}
STORAGE_VEC_KERNELS(bn_relu_apply_nhwc,
                    (T* y, const T* x, const float* mean, const float* inv_std, const float* gamma, const float* beta, int c,
                     int total),
                    (y, x, mean, inv_std, gamma, beta, c, total))

// bn_eval_f32 over NHWC x and y, in their storage type.
template <class T, int V>
__device__ void bn_eval_nhwc(T* y, const T* x, const float* gamma, const float* beta, const float* run_mean, const float* run_var, int c,
                             int total, float eps) {
    NHWCSpan sp = nhwc_span(c / V);
    if (!sp.active) return;
    float scale[V], shift[V];
    for (int k = 0; k < V; k++) {
        int ch = sp.ch * V + k;
        float inv = (float)(1.0 / sqrt((double)run_var[ch] + (double)eps));
        scale[k] = gamma[ch] * inv;
        shift[k] = beta[ch] - run_mean[ch] * scale[k];
    }
    typedef Pack<T, V> P;
    for (unsigned i = sp.first; i < (unsigned)(total / V); i += sp.step) {
        P xv = ((const P*)x)[i], yv;
        for (int k = 0; k < V; k++) store(yv.v, k, load(xv.v, k) * scale[k] + shift[k]);
        ((P*)y)[i] = yv;
    }
}
STORAGE_VEC_KERNELS(bn_eval_nhwc,
                    (T* y, const T* x, const float* gamma, const float* beta, const float* run_mean, const float* run_var, int c,
                     int total, float eps),
                    (y, x, gamma, beta, run_mean, run_var, c, total, eps))

// The backward passes read xhat (or x) as stored: where it is 16-bit,
// the rounded value the forward pass kept.
template <class T, int V>
__device__ void bn_bwd_apply_nhwc(T* dx, const T* dy, const T* xhat, const float* inv_std, const float* gamma, const float* dgamma,
                                  const float* dbeta, int c, int total, int m) {
    NHWCSpan sp = nhwc_span(c / V);
    if (!sp.active) return;
    float fm = (float)m;
    float kk[V], fs[V], fsx[V];
    for (int k = 0; k < V; k++) {
        int ch = sp.ch * V + k;
        kk[k] = gamma[ch] * inv_std[ch] / fm, fs[k] = dbeta[ch], fsx[k] = dgamma[ch];
    }
    typedef Pack<T, V> P;
    for (unsigned i = sp.first; i < (unsigned)(total / V); i += sp.step) {
        P dyv = ((const P*)dy)[i], hv = ((const P*)xhat)[i], dxv;
        for (int k = 0; k < V; k++) store(dxv.v, k, kk[k] * (fm * load(dyv.v, k) - fs[k] - load(hv.v, k) * fsx[k]));
        ((P*)dx)[i] = dxv;
    }
}
STORAGE_VEC_KERNELS(bn_bwd_apply_nhwc,
                    (T* dx, const T* dy, const T* xhat, const float* inv_std, const float* gamma, const float* dgamma,
                     const float* dbeta, int c, int total, int m),
                    (dx, dy, xhat, inv_std, gamma, dgamma, dbeta, c, total, m))

template <class T, int V>
__device__ void bn_relu_bwd_apply_nhwc(T* dx, const T* dy, const T* x, const float* mean, const float* inv_std, const float* gamma,
                                       const float* beta, const float* dgamma, const float* dbeta, int c, int total, int m) {
    NHWCSpan sp = nhwc_span(c / V);
    if (!sp.active) return;
    float fm = (float)m;
    float mu[V], inv[V], g[V], b[V], kk[V], fs[V], fsx[V];
    bn_params(sp.ch * V, mean, inv_std, gamma, beta, mu, inv, g, b);
    for (int k = 0; k < V; k++) {
        int ch = sp.ch * V + k;
        kk[k] = g[k] * inv[k] / fm, fs[k] = dbeta[ch], fsx[k] = dgamma[ch];
    }
    typedef Pack<T, V> P;
    for (unsigned i = sp.first; i < (unsigned)(total / V); i += sp.step) {
        P xv = ((const P*)x)[i], dyv = ((const P*)dy)[i], dxv;
        for (int k = 0; k < V; k++) {
            float h = (load(xv.v, k) - mu[k]) * inv[k];
            float v = g[k] * h + b[k];
            float d = v > 0.0f ? load(dyv.v, k) : 0.0f;
            store(dxv.v, k, kk[k] * (fm * d - fs[k] - h * fsx[k]));
        }
        ((P*)dx)[i] = dxv;
    }
}
STORAGE_VEC_KERNELS(bn_relu_bwd_apply_nhwc,
                    (T* dx, const T* dy, const T* x, const float* mean, const float* inv_std, const float* gamma, const float* beta,
                     const float* dgamma, const float* dbeta, int c, int total, int m),
                    (dx, dy, x, mean, inv_std, gamma, beta, dgamma, dbeta, c, total, m))

// A residual block's end (backend.FusedResidual): batch norm, the shortcut
// skip added, then ReLU, keeping no xhat; and its backward pass, which
// takes the ReLU's mask from the output y, writes the gradient of the sum
// (dsum, which the shortcut takes too) and recomputes xhat from x. Each
// computes what BatchNormTrain then AddReLU, and ReLUBackward then
// BatchNormBackward, compute, in the same order.

// One block per row (i, ch): y = max(γ·xhat + β + skip, 0).
extern "C" __global__ void bn_add_relu_apply_f32(float* y, const float* x, const float* skip, const float* mean,
                                                 const float* inv_std, const float* gamma, const float* beta,
                                                 int c, int spatial) {
    long long row = blockIdx.x;
    int ch = (int)(row % c);
    float mu = mean[ch], inv = inv_std[ch], g = gamma[ch], b = beta[ch];
    long long base = row * spatial;
    for (int j = threadIdx.x; j < spatial; j += blockDim.x) {
        float h = (x[base + j] - mu) * inv;
        float v = g * h + b;
        v = v + skip[base + j];
        y[base + j] = v > 0.0f ? v : 0.0f;
    }
}

template <class T, int V>
__device__ void bn_add_relu_apply_nhwc(T* y, const T* x, const T* skip, const float* mean, const float* inv_std, const float* gamma,
                                       const float* beta, int c, int total) {
    NHWCSpan sp = nhwc_span(c / V);
    if (!sp.active) return;
    float mu[V], inv[V], g[V], b[V];
    bn_params(sp.ch * V, mean, inv_std, gamma, beta, mu, inv, g, b);
    typedef Pack<T, V> P;
    for (unsigned i = sp.first; i < (unsigned)(total / V); i += sp.step) {
        P xv = ((const P*)x)[i], sv = ((const P*)skip)[i], yv;
        for (int k = 0; k < V; k++) {
            float h = (load(xv.v, k) - mu[k]) * inv[k];
            float v = g[k] * h + b[k];
            v = v + load(sv.v, k);
            store(yv.v, k, v > 0.0f ? v : 0.0f);
        }
        ((P*)y)[i] = yv;
    }
}
STORAGE_VEC_KERNELS(bn_add_relu_apply_nhwc,
                    (T* y, const T* x, const T* skip, const float* mean, const float* inv_std, const float* gamma, const float* beta,
                     int c, int total),
                    (y, x, skip, mean, inv_std, gamma, beta, c, total))

// partials[ch*P + p] = (Σd, Σd·xhat) over block (ch, p)'s rows, d = dy
// where y > 0, else 0.
extern "C" __global__ void bn_add_relu_bwd_partial_f32(double2* partials, const float* dy, const float* y, const float* x,
                                                       const float* mean, const float* inv_std, int n, int c, int spatial) {
    int ch = blockIdx.x, lo, hi;
    block_rows(n, &lo, &hi);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    float mu = mean[ch], inv = inv_std[ch];
    double s = 0.0, sx = 0.0;
    for (int i = lo + warp; i < hi; i += warps) {
        long long base = ((long long)i * c + ch) * spatial;
        for (int j = lane; j < spatial; j += 32) {
            float h = (x[base + j] - mu) * inv;
            double d = y[base + j] > 0.0f ? dy[base + j] : 0.0f;
            s += d;
            sx += d * h;
        }
    }
    double2 t = block_sum2(s, sx);
    if (threadIdx.x == 0) partials[ch * gridDim.y + blockIdx.y] = t;
}

// (Σd, Σd·xhat), d = dy where the block's output y > 0, xhat recomputed
// from x.
template <class T, int V> struct AddReLUBwdTerms {
    const T *dy, *y, *x;
    const float *mean, *inv_std;
    __device__ void add(long long pk, int ch0, double (&a)[V], double (&b)[V]) const {
        Pack<T, V> dv = ((const Pack<T, V>*)dy)[pk], yv = ((const Pack<T, V>*)y)[pk], xv = ((const Pack<T, V>*)x)[pk];
        for (int k = 0; k < V; k++) {
            int ch = ch0 + k;
            float h = (load(xv.v, k) - mean[ch]) * inv_std[ch];
            double d = load(yv.v, k) > 0.0f ? load(dv.v, k) : 0.0f;
            a[k] += d;
            b[k] += d * h;
        }
    }
};

template <class T, int V>
__device__ void bn_add_relu_bwd_partial_nhwc(double2* partials, const T* dy, const T* y, const T* x, const float* mean,
                                             const float* inv_std, int m, int c) {
    nhwc_partial<V>(partials, m, c, AddReLUBwdTerms<T, V>{dy, y, x, mean, inv_std});
}
STORAGE_VEC_KERNELS(bn_add_relu_bwd_partial_nhwc,
                    (double2* partials, const T* dy, const T* y, const T* x, const float* mean, const float* inv_std, int m,
                     int c),
                    (partials, dy, y, x, mean, inv_std, m, c))

// One block per row: dsum = dy where y > 0, else 0; dx as bn_bwd_apply_f32
// computes it from dsum and xhat.
extern "C" __global__ void bn_add_relu_bwd_apply_f32(float* dx, float* dsum, const float* dy, const float* y, const float* x,
                                                     const float* mean, const float* inv_std, const float* gamma,
                                                     const float* dgamma, const float* dbeta, int c, int spatial, int m) {
    long long row = blockIdx.x;
    int ch = (int)(row % c);
    float mu = mean[ch], inv = inv_std[ch];
    float k = gamma[ch] * inv / (float)m;
    float fs = dbeta[ch], fsx = dgamma[ch], fm = (float)m;
    long long base = row * spatial;
    for (int j = threadIdx.x; j < spatial; j += blockDim.x) {
        float h = (x[base + j] - mu) * inv;
        float d = y[base + j] > 0.0f ? dy[base + j] : 0.0f;
        dsum[base + j] = d;
        dx[base + j] = k * (fm * d - fs - h * fsx);
    }
}

template <class T, int V>
__device__ void bn_add_relu_bwd_apply_nhwc(T* dx, T* dsum, const T* dy, const T* y, const T* x, const float* mean, const float* inv_std,
                                           const float* gamma, const float* dgamma, const float* dbeta, int c, int total, int m) {
    NHWCSpan sp = nhwc_span(c / V);
    if (!sp.active) return;
    float fm = (float)m;
    float mu[V], inv[V], kk[V], fs[V], fsx[V];
    for (int k = 0; k < V; k++) {
        int ch = sp.ch * V + k;
        mu[k] = mean[ch], inv[k] = inv_std[ch];
        kk[k] = gamma[ch] * inv[k] / fm, fs[k] = dbeta[ch], fsx[k] = dgamma[ch];
    }
    typedef Pack<T, V> P;
    for (unsigned i = sp.first; i < (unsigned)(total / V); i += sp.step) {
        P xv = ((const P*)x)[i], yv = ((const P*)y)[i], dyv = ((const P*)dy)[i], dsv, dxv;
        for (int k = 0; k < V; k++) {
            float h = (load(xv.v, k) - mu[k]) * inv[k];
            float d = load(yv.v, k) > 0.0f ? load(dyv.v, k) : 0.0f;
            store(dsv.v, k, d);
            store(dxv.v, k, kk[k] * (fm * d - fs[k] - h * fsx[k]));
        }
        ((P*)dsum)[i] = dsv;
        ((P*)dx)[i] = dxv;
    }
}
STORAGE_VEC_KERNELS(bn_add_relu_bwd_apply_nhwc,
                    (T* dx, T* dsum, const T* dy, const T* y, const T* x, const float* mean, const float* inv_std, const float* gamma,
                     const float* dgamma, const float* dbeta, int c, int total, int m),
                    (dx, dsum, dy, y, x, mean, inv_std, gamma, dgamma, dbeta, c, total, m))
