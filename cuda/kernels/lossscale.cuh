// The loss scaler's state at Options.Precision "fp16" (lossscale.go):
// four floats in one device buffer, read by the loss gradient, the
// optimizer updates and lossscale.cu.

#pragma once

#define LOSS_SCALE 0          // S: the loss gradient is multiplied by it
#define LOSS_SCALE_FOUND 1    // nonzero once a gradient of this step is not finite
#define LOSS_SCALE_GOOD 2     // steps in a row without a non-finite gradient
#define LOSS_SCALE_SKIPPED 3  // steps skipped since the state was set

// finite says whether v is neither ±Inf nor NaN (NaN fails every comparison).
__device__ __forceinline__ bool finite(float v) { return fabsf(v) <= 3.40282347e38f; }
