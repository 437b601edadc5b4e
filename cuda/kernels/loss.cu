// Log-softmax, negative log-likelihood with arg-max accuracy, and their
// joint backward. One thread per row.

extern "C" __global__ void log_softmax_f32(float* y, const float* x, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* xr = x + (long long)r * cols;
    float mx = xr[0];
    for (int i = 1; i < cols; i++) mx = fmaxf(mx, xr[i]);
    double s = 0.0;
    for (int i = 0; i < cols; i++) s += exp((double)(xr[i] - mx));
    float lse = mx + (float)log(s);
    for (int i = 0; i < cols; i++) y[(long long)r * cols + i] = xr[i] - lse;
}

// sums[0] += -logp[r, label]; sums[1] += 1 when the first arg-max is the
// label; sums[2] += 1 when fewer than five classes score higher than it. A label outside [0, cols) sets *bad_label to 1 (reported by the
// host at the next synchronization).
extern "C" __global__ void nll_f32(float* sums, const float* logp, const float* labels, int rows, int cols,
                                   unsigned int* bad_label) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    int l = (int)labels[r];
    if (l < 0 || l >= cols || (float)l != labels[r]) {
        *bad_label = 1u;
        return;
    }
    const float* row = logp + (long long)r * cols;
    int best = 0, higher = 0;
    for (int i = 1; i < cols; i++) if (row[i] > row[best]) best = i;
    for (int i = 0; i < cols; i++) if (row[i] > row[l]) higher++;
    atomicAdd(&sums[0], -row[l]);
    if (best == l) atomicAdd(&sums[1], 1.0f);
    if (higher < 5) atomicAdd(&sums[2], 1.0f);
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
