// Dynamic loss scaling for Options.Precision "fp16" (lossscale.go), as
// PyTorch's GradScaler does it, without the host: each step checks every
// gradient for non-finite values into the state's flag, the optimizer
// updates (optim.cu) skip the step when the flag is set and otherwise
// divide the gradients by the scale, and loss_scale_update_f32 then adjusts
// the scale.

#include "lossscale.cuh"

// loss_scale_check_f32 sets state[LOSS_SCALE_FOUND] when any of g's n
// values is not finite. Threads that find one all store the same value.
extern "C" __global__ void loss_scale_check_f32(float* state, const float* g, int n) {
    if (state[LOSS_SCALE_FOUND] != 0.0f) return;
    bool bad = false;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        if (!finite(g[i])) bad = true;
    }
    if (bad) state[LOSS_SCALE_FOUND] = 1.0f;
}

// loss_scale_update_f32 ends a step (one thread). After a step with a
// non-finite gradient, which the updates skipped, the scale halves (not
// below 2^-126, whose reciprocal is finite), the run of good steps
// restarts and the skipped count grows; after interval good steps in a
// row the scale doubles (while that is finite).
extern "C" __global__ void loss_scale_update_f32(float* state, int interval) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    if (state[LOSS_SCALE_FOUND] != 0.0f) {
        state[LOSS_SCALE] = fmaxf(state[LOSS_SCALE] * 0.5f, 1.17549435e-38f);
        state[LOSS_SCALE_GOOD] = 0.0f;
        state[LOSS_SCALE_SKIPPED] += 1.0f;
        state[LOSS_SCALE_FOUND] = 0.0f;
        return;
    }
    float good = state[LOSS_SCALE_GOOD] + 1.0f;
    if (good >= (float)interval) {
        float doubled = state[LOSS_SCALE] * 2.0f;
        if (finite(doubled)) state[LOSS_SCALE] = doubled;
        good = 0.0f;
    }
    state[LOSS_SCALE_GOOD] = good;
}
