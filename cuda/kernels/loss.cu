// Log-softmax, negative log-likelihood with arg-max accuracy, and their
// joint backward. log_softmax_f32 and nll_f32 give each row a warp (blocks
// of whole warps; a row's lanes stride along it and combine by shuffles in
// a fixed order); the backward is one thread per element.

// warp_sum adds v over the warp; every lane gets the total.
__device__ double warp_sum(double v) {
    for (int k = 16; k > 0; k >>= 1) v += __shfl_down_sync(0xffffffffu, v, k);
    return __shfl_sync(0xffffffffu, v, 0);
}

extern "C" __global__ void log_softmax_f32(float* y, const float* x, int rows, int cols) {
    int r = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
    if (r >= rows) return; // whole warps: rows never split a warp
    const float* xr = x + (long long)r * cols;
    float mx = -INFINITY;
    for (int i = lane; i < cols; i += 32) mx = fmaxf(mx, xr[i]);
    for (int k = 16; k > 0; k >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, k));
    double s = 0.0;
    for (int i = lane; i < cols; i += 32) s += exp((double)(xr[i] - mx));
    s = warp_sum(s);
    float lse = mx + (float)log(s);
    for (int i = lane; i < cols; i += 32) y[(long long)r * cols + i] = xr[i] - lse;
}

// sums[0] += -logp[r, label]; sums[1] += 1 when the first arg-max is the
// label; sums[2] += 1 when fewer than five classes score higher than it.
// A label outside [0, cols) sets *bad_label to 1 (reported by the host at
// the next synchronization).
extern "C" __global__ void nll_f32(float* sums, const float* logp, const float* labels, int rows, int cols,
                                   unsigned int* bad_label) {
    int r = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
    if (r >= rows) return;
    int l = (int)labels[r];
    if (l < 0 || l >= cols || (float)l != labels[r]) {
        if (lane == 0) *bad_label = 1u;
        return;
    }
    const float* row = logp + (long long)r * cols;
    float target = row[l];
    // Each lane's first maximum and its count of classes above the label.
    int best = -1, higher = 0;
    float bestv = 0.0f;
    for (int i = lane; i < cols; i += 32) {
        float v = row[i];
        if (best < 0 || v > bestv) { bestv = v; best = i; }
        if (v > target) higher++;
    }
    // The first maximum over the row: larger value, or the same value at a
    // smaller index (a lane with no column has best = -1).
    for (int k = 16; k > 0; k >>= 1) {
        float ov = __shfl_down_sync(0xffffffffu, bestv, k);
        int oi = __shfl_down_sync(0xffffffffu, best, k);
        higher += __shfl_down_sync(0xffffffffu, higher, k);
        if (oi >= 0 && (best < 0 || ov > bestv || (ov == bestv && oi < best))) { bestv = ov; best = oi; }
    }
    if (lane == 0) {
        atomicAdd(&sums[0], -target);
        if (best == l) atomicAdd(&sums[1], 1.0f);
        if (higher < 5) atomicAdd(&sums[2], 1.0f);
    }
}

// dx = scale * (exp(logp) - onehot(label)); a label outside [0, cols)
// sets *bad_label as nll_f32 does.
extern "C" __global__ void log_softmax_nll_bwd_f32(float* dx, const float* logp, const float* labels,
                                                   int rows, int cols, float scale, unsigned int* bad_label) {
    long long total = (long long)rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        int r = (int)(i / cols), col = (int)(i % cols);
        int l = (int)labels[r];
        if (col == 0 && (l < 0 || l >= cols || (float)l != labels[r])) *bad_label = 1u;
        float v = scale * expf(logp[i]);
        if (col == l) v -= scale;
        dx[i] = v;
    }
}
