// Elementwise kernels: fill, ReLU forward/backward, add, bias add and its
// gradient. One thread per element or per pack of elements (grid-stride),
// bias_grad one block per channel.

#include "storage.cuh"

extern "C" __global__ void fill_f32(float* t, float v, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) t[i] = v;
}

// ReLU and the adds over activations stored as float32, bf16 or fp16
// (storage.cuh), y[i] = f(a[i], b[i]) for i < n: a 16-byte pack at a time
// (a thread per pack, grid-stride) while whole packs remain and every
// pointer is aligned to one, then an element at a time. Every element is
// computed the same way either way; y may be a or b (in place).
template <class T, class F> __device__ void map2(T* y, const T* a, const T* b, int n, F f) {
    enum { V = VecWidth<T>::value };
    typedef Pack<T, V> P;
    int t = blockIdx.x * blockDim.x + threadIdx.x, stride = blockDim.x * gridDim.x, done = 0;
    if (((size_t)y | (size_t)a | (size_t)b) % sizeof(P) == 0) {
        int packs = n / V;
        for (int i = t; i < packs; i += stride) {
            P av = ((const P*)a)[i], bv = ((const P*)b)[i], yv;
            for (int k = 0; k < V; k++) store(yv.v, k, f(load(av.v, k), load(bv.v, k)));
            ((P*)y)[i] = yv;
        }
        done = packs * V;
    }
    for (int i = done + t; i < n; i += stride) store(y, i, f(load(a, i), load(b, i)));
}

struct ReLU {
    __device__ float operator()(float x, float) const { return x > 0.0f ? x : 0.0f; }
};
template <class T> __device__ void relu_fwd(T* y, const T* x, int n) { map2(y, x, x, n, ReLU{}); }
STORAGE_KERNELS(relu_fwd, (T* y, const T* x, int n), (y, x, n))

// dx = dy where the forward output y > 0.
struct ReLUBackward {
    __device__ float operator()(float dy, float y) const { return y > 0.0f ? dy : 0.0f; }
};
template <class T> __device__ void relu_bwd(T* dx, const T* dy, const T* y, int n) { map2(dx, dy, y, n, ReLUBackward{}); }
STORAGE_KERNELS(relu_bwd, (T* dx, const T* dy, const T* y, int n), (dx, dy, y, n))

struct Sum {
    __device__ float operator()(float a, float b) const { return a + b; }
};
template <class T> __device__ void add(T* y, const T* a, const T* b, int n) { map2(y, a, b, n, Sum{}); }
STORAGE_KERNELS(add, (T* y, const T* a, const T* b, int n), (y, a, b, n))

// y = max(a + b, 0): a residual block's sum and its ReLU in one pass.
struct SumReLU {
    __device__ float operator()(float a, float b) const {
        float v = a + b;
        return v > 0.0f ? v : 0.0f;
    }
};
template <class T> __device__ void add_relu(T* y, const T* a, const T* b, int n) { map2(y, a, b, n, SumReLU{}); }
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
