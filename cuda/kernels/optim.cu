// Optimizer updates, PyTorch semantics. step_size = lr / (1 - beta1^t) and
// bc2_sqrt = sqrt(1 - beta2^t) are computed on the host.

extern "C" __global__ void adam_f32(float* w, const float* g, float* m, float* v, int n,
                                    float beta1, float beta2, float eps, float wd,
                                    float step_size, float bc2_sqrt) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float gi = g[i];
        if (wd != 0.0f) gi += wd * w[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

extern "C" __global__ void sgd_f32(float* w, const float* g, float* buf, int n,
                                   float lr, float momentum, float wd, int nesterov) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float gi = g[i];
        if (wd != 0.0f) gi += wd * w[i];
        if (momentum != 0.0f) {
            float b = momentum * buf[i] + gi;
            buf[i] = b;
            gi = nesterov ? gi + momentum * b : b;
        }
        w[i] -= lr * gi;
    }
}
