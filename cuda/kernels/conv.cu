// im2col and col2im for convolutions as GEMMs, over a batch: cols holds,
// per sample, C*KH*KW rows of OH*OW columns. col2im gathers (each input
// element sums its own contributions), so it needs no atomics and its sum
// order is fixed. im2col_bf16 and im2col_f16 write the columns rounded
// to bf16 or fp16 (nearest even) for the 16-bit GEMMs of
// Options.Precision "bf16" and "fp16".

#include "storage.cuh"

// im2col_at is element i of the columns of a batch (zero in the padding).
__device__ __forceinline__ float im2col_at(const float* x, long long i, long long per, int c, int h, int w,
                                           int kh, int kw, int stride, int pad, int oh, int ow) {
    long long smp = i / per, rem = i % per;
    int col = (int)(rem % (oh * ow));
    int row = (int)(rem / (oh * ow));
    int kx = row % kw, ky = (row / kw) % kh, ch = row / (kw * kh);
    int oy = col / ow, ox = col % ow;
    int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
    if (iy >= 0 && iy < h && ix >= 0 && ix < w) return x[((smp * c + ch) * h + iy) * w + ix];
    return 0.0f;
}

// im2col writes the columns of a batch, rounded to T.
template <class T>
__device__ __forceinline__ void im2col(T* cols, const float* x, int n, int c, int h, int w, int kh, int kw, int stride, int pad,
                                       int oh, int ow) {
    long long per = (long long)c * kh * kw * oh * ow;
    long long total = per * n;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        store(cols, i, im2col_at(x, i, per, c, h, w, kh, kw, stride, pad, oh, ow));
    }
}

extern "C" __global__ void im2col_f32(float* cols, const float* x, int n, int c, int h, int w, int kh, int kw, int stride,
                                      int pad, int oh, int ow) {
    im2col(cols, x, n, c, h, w, kh, kw, stride, pad, oh, ow);
}

extern "C" __global__ void im2col_bf16(__nv_bfloat16* cols, const float* x, int n, int c, int h, int w, int kh, int kw,
                                       int stride, int pad, int oh, int ow) {
    im2col(cols, x, n, c, h, w, kh, kw, stride, pad, oh, ow);
}

extern "C" __global__ void im2col_f16(__half* cols, const float* x, int n, int c, int h, int w, int kh, int kw, int stride,
                                      int pad, int oh, int ow) {
    im2col(cols, x, n, c, h, w, kh, kw, stride, pad, oh, ow);
}

extern "C" __global__ void col2im_f32(float* dx, const float* cols, int n, int c, int h, int w,
                                      int kh, int kw, int stride, int pad, int oh, int ow) {
    long long total = (long long)n * c * h * w;
    long long per = (long long)c * kh * kw * oh * ow;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        int ix = (int)(i % w), iy = (int)((i / w) % h), ch = (int)((i / ((long long)w * h)) % c);
        long long smp = i / ((long long)w * h * c);
        float s = 0.0f;
        for (int ky = 0; ky < kh; ky++) {
            int ty = iy + pad - ky;
            if (ty < 0 || ty % stride != 0) continue;
            int oy = ty / stride;
            if (oy >= oh) continue;
            for (int kx = 0; kx < kw; kx++) {
                int tx = ix + pad - kx;
                if (tx < 0 || tx % stride != 0) continue;
                int ox = tx / stride;
                if (ox >= ow) continue;
                s += cols[smp * per + ((long long)(ch * kh + ky) * kw + kx) * oh * ow + oy * ow + ox];
            }
        }
        dx[i] = s;
    }
}
