// Max pooling (with arg-max indices within each H×W plane, first maximum
// on ties, padding ignored) and global average pooling.

// Index arithmetic is 32-bit unsigned: launchN keeps every index below
// 2³¹, and 64-bit division costs several times as much (these kernels
// would otherwise be bound by it rather than by memory).
extern "C" __global__ void maxpool_fwd_f32(float* y, float* argmax, const float* x, unsigned planes, int h, int w,
                                           int k, int stride, int pad, unsigned oh, unsigned ow) {
    unsigned total = planes * oh * ow;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned row = i / ow, ox = i - row * ow;
        unsigned p = row / oh, oy = row - p * oh;
        const float* plane = x + p * (unsigned)(h * w);
        float best = 0.0f;
        int idx = -1;
        for (int ky = 0; ky < k; ky++) {
            int iy = (int)oy * stride - pad + ky;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; kx++) {
                int ix = (int)ox * stride - pad + kx;
                if (ix < 0 || ix >= w) continue;
                float v = plane[iy * w + ix];
                if (idx < 0 || v > best) { best = v; idx = iy * w + ix; }
            }
        }
        y[i] = best;
        argmax[i] = (float)idx;
    }
}

// dx = the sum of dy over the windows whose arg-max is this position,
// gathered per input element (no atomics: a fixed order, output rows then
// columns ascending, as the CPU adds them).
extern "C" __global__ void maxpool_bwd_f32(float* dx, const float* dy, const float* argmax, unsigned planes, int h, int w,
                                           int k, int stride, int pad, int oh, int ow) {
    unsigned total = planes * (unsigned)(h * w);
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned row = i / (unsigned)w, p = row / (unsigned)h;
        int ix = (int)(i - row * (unsigned)w), iy = (int)(row - p * (unsigned)h);
        // Windows oy cover iy when oy*stride - pad <= iy <= oy*stride - pad + k - 1.
        int ty = iy + pad - k + 1, tx = ix + pad - k + 1;
        int oy0 = ty <= 0 ? 0 : (ty + stride - 1) / stride, oy1 = min(oh - 1, (iy + pad) / stride);
        int ox0 = tx <= 0 ? 0 : (tx + stride - 1) / stride, ox1 = min(ow - 1, (ix + pad) / stride);
        float here = (float)(iy * w + ix), s = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++) {
            for (int ox = ox0; ox <= ox1; ox++) {
                unsigned o = (p * (unsigned)oh + (unsigned)oy) * (unsigned)ow + (unsigned)ox;
                if (argmax[o] == here) s += dy[o];
            }
        }
        dx[i] = s;
    }
}

extern "C" __global__ void gap_fwd_f32(float* y, const float* x, int planes, int spatial) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= planes) return;
    float s = 0.0f;
    for (int i = 0; i < spatial; i++) s += x[(long long)p * spatial + i];
    y[p] = s / (float)spatial;
}

extern "C" __global__ void gap_bwd_f32(float* dx, const float* dy, unsigned planes, unsigned spatial) {
    unsigned total = planes * spatial;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        dx[i] = dy[i / spatial] / (float)spatial;
    }
}
