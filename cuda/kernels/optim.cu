// Optimizer updates, PyTorch semantics. step_size = lr / (1 - beta1^t) and
// bc2_sqrt = sqrt(1 - beta2^t) are computed on the host. With a loss
// scaler (Options.Precision "fp16", lossscale.cuh; null otherwise) g is
// the scaled gradient: it is divided by the scale, and a step whose flag
// says a gradient was not finite changes nothing. Adam's t then counts
// only the steps applied, as under PyTorch's GradScaler (which does not
// call a skipped step's optimizer.step()): the host's step less the
// scaler's skipped steps, and the bias corrections are computed here, in
// double as on the host (two pow per thread: small beside the update's
// memory traffic).

#include "lossscale.cuh"

// unscaling returns the factor that undoes the loss scale, or 0 where the
// step is skipped.
__device__ __forceinline__ float unscaling(const float* scaler) {
    if (scaler == nullptr) return 1.0f;
    if (scaler[LOSS_SCALE_FOUND] != 0.0f) return 0.0f;
    return 1.0f / scaler[LOSS_SCALE];
}

extern "C" __global__ void adam_f32(float* w, const float* g, float* m, float* v, int n,
                                    float beta1, float beta2, float eps, float wd,
                                    float step_size, float bc2_sqrt, float lr, int step, const float* scaler) {
    float unscale = unscaling(scaler);
    if (unscale == 0.0f) return;
    if (scaler != nullptr) {
        int t = max(step - (int)scaler[LOSS_SCALE_SKIPPED], 1);  // at least 1 for a state set by hand
        step_size = (float)((double)lr / (1.0 - pow((double)beta1, t)));
        bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, t));
    }
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float gi = g[i] * unscale;
        if (wd != 0.0f) gi += wd * w[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

extern "C" __global__ void sgd_f32(float* w, const float* g, float* buf, int n,
                                   float lr, float momentum, float wd, int nesterov, const float* scaler) {
    float unscale = unscaling(scaler);
    if (unscale == 0.0f) return;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        float gi = g[i] * unscale;
        if (wd != 0.0f) gi += wd * w[i];
        if (momentum != 0.0f) {
            float b = momentum * buf[i] + gi;
            buf[i] = b;
            gi = nesterov ? gi + momentum * b : b;
        }
        w[i] -= lr * gi;
    }
}
