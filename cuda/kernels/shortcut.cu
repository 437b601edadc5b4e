// ResNet's option-A shortcut: subsample by the stride and zero-pad
// channels equally on both sides (pad = (oc - c) / 2), and its transpose.

// Index arithmetic is 32-bit unsigned, as in pool.cu (launchN keeps
// indices below 2³¹), its divisions multiply-shifts (divide.cuh). The
// forward kernels take the divisors oc, ow and oh, the backward ones c, w,
// h and stride, in both layouts (layout.cu).

#include "divide.cuh"

extern "C" __global__ void shortcut_a_fwd_f32(float* y, const float* x, unsigned n, int c, unsigned h, unsigned w,
                                              unsigned oc, unsigned stride, unsigned oh, unsigned ow,
                                              unsigned oc_mul, unsigned oc_shift, unsigned ow_mul, unsigned ow_shift,
                                              unsigned oh_mul, unsigned oh_shift) {
    Divisor by_oc = {oc_mul, oc_shift}, by_ow = {ow_mul, ow_shift}, by_oh = {oh_mul, oh_shift};
    int pad = ((int)oc - c) / 2;
    unsigned total = n * oc * oh * ow;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned row = by_ow.div(i), ox = i - row * ow;
        unsigned plane = by_oh.div(row), oy = row - plane * oh;
        unsigned smp = by_oc.div(plane), o = plane - smp * oc;
        int ch = (int)o - pad;
        y[i] = (ch >= 0 && ch < c) ? x[((smp * (unsigned)c + (unsigned)ch) * h + oy * stride) * w + ox * stride] : 0.0f;
    }
}

extern "C" __global__ void shortcut_a_bwd_f32(float* dx, const float* dy, unsigned n, unsigned c, unsigned h, unsigned w,
                                              unsigned oc, unsigned stride, unsigned oh, unsigned ow,
                                              unsigned c_mul, unsigned c_shift, unsigned w_mul, unsigned w_shift,
                                              unsigned h_mul, unsigned h_shift, unsigned stride_mul, unsigned stride_shift) {
    Divisor by_c = {c_mul, c_shift}, by_w = {w_mul, w_shift}, by_h = {h_mul, h_shift}, by_stride = {stride_mul, stride_shift};
    unsigned pad = (oc - c) / 2;
    unsigned total = n * c * h * w;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned row = by_w.div(i), ix = i - row * w;
        unsigned plane = by_h.div(row), iy = row - plane * h;
        unsigned smp = by_c.div(plane), ch = plane - smp * c;
        unsigned qy = by_stride.div(iy), qx = by_stride.div(ix);
        float v = 0.0f;
        if (qy * stride == iy && qx * stride == ix) {
            v = dy[((smp * oc + ch + pad) * oh + qy) * ow + qx];
        }
        dx[i] = v;
    }
}
