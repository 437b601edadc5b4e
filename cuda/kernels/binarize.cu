// Binarization kernels: sign (two-valued, sign(0) = +1), the per-channel
// scaled sign, the clipped straight-through mask and latent clipping.
// Launch: one thread per element (grid-stride loops), except sign_scaled
// which takes one block per output channel.

extern "C" __global__ void sign_f32(float* dst, const float* src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        dst[i] = src[i] < 0.0f ? -1.0f : 1.0f;
    }
}

// dst[r, :] = mean(|src[r, :]|) * sign(src[r, :]) for each of rows channels
// of cols weights. Block size must be a power of two, at most 1024.
extern "C" __global__ void sign_scaled_f32(float* dst, const float* src, int rows, int cols) {
    __shared__ float partial[1024];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* w = src + (long long)r * cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s += fabsf(w[i]);
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) partial[threadIdx.x] += partial[threadIdx.x + k];
        __syncthreads();
    }
    float scale = partial[0] / (float)cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        dst[(long long)r * cols + i] = w[i] < 0.0f ? -scale : scale;
    }
}

extern "C" __global__ void ste_clipped_mask_f32(float* grad, const float* latent, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float w = latent[i];
        if (w > 1.0f || w < -1.0f) grad[i] = 0.0f;
    }
}

extern "C" __global__ void clip_f32(float* t, float lo, float hi, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        t[i] = fminf(fmaxf(t[i], lo), hi);
    }
}
