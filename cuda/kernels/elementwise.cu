// Elementwise kernels: fill, ReLU forward/backward, add, bias add and its
// gradient. One thread per element (grid-stride), bias_grad one block per
// channel.

#include "storage.cuh"

extern "C" __global__ void fill_f32(float* t, float v, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) t[i] = v;
}

// ReLU and the adds over activations stored as float32 or bf16
// (storage.cuh).

template <class T> __device__ void relu_fwd(T* y, const T* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float v = load(x, i);
        store(y, i, v > 0.0f ? v : 0.0f);
    }
}
STORAGE_KERNELS(relu_fwd, (T* y, const T* x, int n), (y, x, n))

// dx = dy where the forward output y > 0.
template <class T> __device__ void relu_bwd(T* dx, const T* dy, const T* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        store(dx, i, load(y, i) > 0.0f ? load(dy, i) : 0.0f);
    }
}
STORAGE_KERNELS(relu_bwd, (T* dx, const T* dy, const T* y, int n), (dx, dy, y, n))

template <class T> __device__ void add(T* y, const T* a, const T* b, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) store(y, i, load(a, i) + load(b, i));
}
STORAGE_KERNELS(add, (T* y, const T* a, const T* b, int n), (y, a, b, n))

// y = max(a + b, 0): a residual block's sum and its ReLU in one pass.
template <class T> __device__ void add_relu(T* y, const T* a, const T* b, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float v = load(a, i) + load(b, i);
        store(y, i, v > 0.0f ? v : 0.0f);
    }
}
STORAGE_KERNELS(add_relu, (T* y, const T* a, const T* b, int n), (y, a, b, n))

// y[n, c, s] += bias[c] over n×c×spatial.
extern "C" __global__ void bias_add_f32(float* y, const float* bias, int n, int c, int spatial) {
    long long total = (long long)n * c * spatial;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        y[i] += bias[(i / spatial) % c];
    }
}

// dbias[c] = sum of dy over samples and positions; one block per channel,
// block size a power of two (at most 1024). The sum order is fixed.
extern "C" __global__ void bias_grad_f32(float* dbias, const float* dy, int n, int c, int spatial) {
    __shared__ float partial[1024];
    int ch = blockIdx.x;
    if (ch >= c) return;
    float s = 0.0f;
    int m = n * spatial;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        int smp = j / spatial, pos = j % spatial;
        s += dy[((long long)smp * c + ch) * spatial + pos];
    }
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) partial[threadIdx.x] += partial[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) dbias[ch] = partial[0];
}
