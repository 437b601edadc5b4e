// ResNet's option-A shortcut: subsample by the stride and zero-pad
// channels equally on both sides (pad = (oc - c) / 2), and its transpose.

// Index arithmetic is 32-bit unsigned, as in pool.cu (launchN keeps
// indices below 2³¹).
extern "C" __global__ void shortcut_a_fwd_f32(float* y, const float* x, unsigned n, int c, unsigned h, unsigned w,
                                              unsigned oc, unsigned stride, unsigned oh, unsigned ow) {
    int pad = ((int)oc - c) / 2;
    unsigned total = n * oc * oh * ow;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned row = i / ow, ox = i - row * ow;
        unsigned plane = row / oh, oy = row - plane * oh;
        unsigned smp = plane / oc, o = plane - smp * oc;
        int ch = (int)o - pad;
        y[i] = (ch >= 0 && ch < c) ? x[((smp * (unsigned)c + (unsigned)ch) * h + oy * stride) * w + ox * stride] : 0.0f;
    }
}

extern "C" __global__ void shortcut_a_bwd_f32(float* dx, const float* dy, unsigned n, unsigned c, unsigned h, unsigned w,
                                              unsigned oc, unsigned stride, unsigned oh, unsigned ow) {
    unsigned pad = (oc - c) / 2;
    unsigned total = n * c * h * w;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        unsigned row = i / w, ix = i - row * w;
        unsigned plane = row / h, iy = row - plane * h;
        unsigned smp = plane / c, ch = plane - smp * c;
        float v = 0.0f;
        if (iy % stride == 0 && ix % stride == 0) {
            v = dy[((smp * oc + ch + pad) * oh + iy / stride) * ow + ix / stride];
        }
        dx[i] = v;
    }
}
