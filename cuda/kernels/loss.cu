// Log-softmax, negative log-likelihood with arg-max accuracy, and their
// joint backward. log_softmax_f32 and nll_f32 give each row a warp (a
// row's lanes stride along it and combine by shuffles in a fixed order;
// log_softmax_f32 runs blocks of whole warps, nll_f32 one block); the
// backward is one thread per element.

#include "lossscale.cuh"

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

// sums[0] += -logp[r, label] over the rows; sums[1] += 1 for each row
// whose first arg-max is the label; sums[2] += 1 for each row with fewer
// than five classes above the label. One block of NLL_THREADS: warp w
// takes rows w, w + warps, ... in order, and the warps' sums (in double)
// are added in warp order, so the result does not depend on timing, as
// the CPU backend's does not. A label outside [0, cols) sets *bad_label
// to 1 (reported by the host at the next synchronization) and its row is
// skipped.
#define NLL_THREADS 1024

extern "C" __global__ void nll_f32(float* sums, const float* logp, const float* labels, int rows, int cols,
                                   unsigned int* bad_label) {
    __shared__ double warp_sums[NLL_THREADS / 32][3];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    double loss = 0.0, correct = 0.0, top5 = 0.0;
    for (int r = warp; r < rows; r += warps) {
        int l = (int)labels[r];
        if (l < 0 || l >= cols || (float)l != labels[r]) {
            if (lane == 0) *bad_label = 1u;
            continue; // the whole warp: l is the row's
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
        loss -= target;
        if (best == l) correct += 1.0;
        if (higher < 5) top5 += 1.0;
    }
    if (lane == 0) {
        warp_sums[warp][0] = loss;
        warp_sums[warp][1] = correct;
        warp_sums[warp][2] = top5;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double s[3] = {0.0, 0.0, 0.0};
        for (int w = 0; w < warps; w++) {
            for (int j = 0; j < 3; j++) s[j] += warp_sums[w][j];
        }
        for (int j = 0; j < 3; j++) sums[j] += (float)s[j];
    }
}

// dx = scale * (exp(logp) - onehot(label)), scale times the loss scale
// where there is a loss scaler (lossscale.cuh; null otherwise); a label
// outside [0, cols) sets *bad_label as nll_f32 does.
extern "C" __global__ void log_softmax_nll_bwd_f32(float* dx, const float* logp, const float* labels,
                                                   int rows, int cols, float scale, unsigned int* bad_label,
                                                   const float* scaler) {
    if (scaler != nullptr) scale *= scaler[LOSS_SCALE];
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
