// ResNet's option-A shortcut: subsample by the stride and zero-pad
// channels equally on both sides (pad = (oc - c) / 2), and its transpose.

extern "C" __global__ void shortcut_a_fwd_f32(float* y, const float* x, int n, int c, int h, int w,
                                              int oc, int stride, int oh, int ow) {
    int pad = (oc - c) / 2;
    long long total = (long long)n * oc * oh * ow;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        int ox = (int)(i % ow), oy = (int)((i / ow) % oh), o = (int)((i / ((long long)ow * oh)) % oc);
        long long smp = i / ((long long)ow * oh * oc);
        int ch = o - pad;
        y[i] = (ch >= 0 && ch < c) ? x[((smp * c + ch) * h + oy * stride) * w + ox * stride] : 0.0f;
    }
}

extern "C" __global__ void shortcut_a_bwd_f32(float* dx, const float* dy, int n, int c, int h, int w,
                                              int oc, int stride, int oh, int ow) {
    int pad = (oc - c) / 2;
    long long total = (long long)n * c * h * w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        int ix = (int)(i % w), iy = (int)((i / w) % h), ch = (int)((i / ((long long)w * h)) % c);
        long long smp = i / ((long long)w * h * c);
        float v = 0.0f;
        if (iy % stride == 0 && ix % stride == 0) {
            v = dy[((smp * oc + ch + pad) * oh + iy / stride) * ow + ix / stride];
        }
        dx[i] = v;
    }
}
