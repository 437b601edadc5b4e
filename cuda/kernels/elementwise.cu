// Elementwise kernels: fill, ReLU forward/backward, add, bias add and its
// gradient. One thread per element (grid-stride), bias_grad one block per
// channel.

extern "C" __global__ void fill_f32(float* t, float v, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) t[i] = v;
}

extern "C" __global__ void relu_fwd_f32(float* y, const float* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

// dx = dy where the forward output y > 0.
extern "C" __global__ void relu_bwd_f32(float* dx, const float* dy, const float* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

extern "C" __global__ void add_f32(float* y, const float* a, const float* b, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) y[i] = a[i] + b[i];
}

// y = max(a + b, 0): a residual block's sum and its ReLU in one pass.
extern "C" __global__ void add_relu_f32(float* y, const float* a, const float* b, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float v = a[i] + b[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

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
