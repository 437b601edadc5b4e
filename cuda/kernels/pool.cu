// Max pooling (with arg-max indices within each H×W plane, first maximum
// on ties, padding ignored) and global average pooling.

// Index arithmetic is 32-bit unsigned: launchN keeps every index below
// 2³¹, and 64-bit division costs several times as much (these kernels
// would otherwise be bound by it rather than by memory); max pooling's
// divisions are multiply-shifts (divide.cuh), for the same reason.

#include "divide.cuh"
extern "C" __global__ void maxpool_fwd_f32(float* y, float* argmax, const float* x, unsigned planes, int h, int w,
                                           int k, int stride, int pad, unsigned oh, unsigned ow,
                                           unsigned ow_mul, unsigned ow_shift, unsigned oh_mul, unsigned oh_shift) {
    Divisor by_ow = {ow_mul, ow_shift}, by_oh = {oh_mul, oh_shift};
    unsigned total = planes * oh * ow;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned row = by_ow.div(i), ox = i - row * ow;
        unsigned p = by_oh.div(row), oy = row - p * oh;
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
                                           int k, int stride, int pad, int oh, int ow, unsigned w_mul, unsigned w_shift,
                                           unsigned h_mul, unsigned h_shift, unsigned stride_mul, unsigned stride_shift) {
    Divisor by_w = {w_mul, w_shift}, by_h = {h_mul, h_shift}, by_stride = {stride_mul, stride_shift};
    unsigned total = planes * (unsigned)(h * w);
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned row = by_w.div(i), p = by_h.div(row);
        int ix = (int)(i - row * (unsigned)w), iy = (int)(row - p * (unsigned)h);
        // Windows oy cover iy when oy*stride - pad <= iy <= oy*stride - pad + k - 1
        // (every numerator divided below is positive).
        int ty = iy + pad - k + 1, tx = ix + pad - k + 1;
        int oy0 = ty <= 0 ? 0 : (int)by_stride.div(ty + stride - 1), oy1 = min(oh - 1, (int)by_stride.div(iy + pad));
        int ox0 = tx <= 0 ? 0 : (int)by_stride.div(tx + stride - 1), ox1 = min(ow - 1, (int)by_stride.div(ix + pad));
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
