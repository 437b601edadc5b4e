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
