// Batch norm over N×C×spatial, PyTorch semantics: biased variance to
// normalize, unbiased variance in the running statistics. Training forward
// and backward take one block per channel (block size a power of two, at
// most 1024) and sum in double in a fixed order; evaluation is one thread
// per element.

__device__ double block_sum(double v, double* partial) {
    partial[threadIdx.x] = v;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) partial[threadIdx.x] += partial[threadIdx.x + k];
        __syncthreads();
    }
    double s = partial[0];
    __syncthreads();
    return s;
}

extern "C" __global__ void bn_train_f32(float* y, float* xhat, float* mean, float* inv_std,
                                        float* run_mean, float* run_var, const float* x,
                                        const float* gamma, const float* beta,
                                        int n, int c, int spatial, float momentum, float eps) {
    __shared__ double partial[1024];
    int ch = blockIdx.x;
    if (ch >= c) return;
    int m = n * spatial;
    double s = 0.0;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        s += x[((long long)(j / spatial) * c + ch) * spatial + j % spatial];
    }
    double mu = block_sum(s, partial) / m;
    double sq = 0.0;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        double d = x[((long long)(j / spatial) * c + ch) * spatial + j % spatial] - mu;
        sq += d * d;
    }
    double var = block_sum(sq, partial) / m;
    float inv = (float)(1.0 / sqrt(var + (double)eps));
    float muf = (float)mu, g = gamma[ch], b = beta[ch];
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        long long i = ((long long)(j / spatial) * c + ch) * spatial + j % spatial;
        float h = (x[i] - muf) * inv;
        xhat[i] = h;
        y[i] = g * h + b;
    }
    if (threadIdx.x == 0) {
        mean[ch] = muf;
        inv_std[ch] = inv;
        run_mean[ch] = (1.0f - momentum) * run_mean[ch] + momentum * muf;
        run_var[ch] = (1.0f - momentum) * run_var[ch] + momentum * (float)(var * m / (m - 1));
    }
}

extern "C" __global__ void bn_eval_f32(float* y, const float* x, const float* gamma, const float* beta,
                                       const float* run_mean, const float* run_var,
                                       int n, int c, int spatial, float eps) {
    long long total = (long long)n * c * spatial;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)blockDim.x * gridDim.x) {
        int ch = (int)((i / spatial) % c);
        float inv = (float)(1.0 / sqrt((double)run_var[ch] + (double)eps));
        float scale = gamma[ch] * inv;
        y[i] = x[i] * scale + (beta[ch] - run_mean[ch] * scale);
    }
}

// dx = gamma*inv_std/m * (m*dy - sum(dy) - xhat*sum(dy*xhat)).
extern "C" __global__ void bn_bwd_f32(float* dx, float* dgamma, float* dbeta, const float* dy,
                                      const float* xhat, const float* inv_std, const float* gamma,
                                      int n, int c, int spatial) {
    __shared__ double partial[1024];
    int ch = blockIdx.x;
    if (ch >= c) return;
    int m = n * spatial;
    double sdy = 0.0, sdyx = 0.0;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        long long i = ((long long)(j / spatial) * c + ch) * spatial + j % spatial;
        sdy += dy[i];
        sdyx += (double)dy[i] * xhat[i];
    }
    sdy = block_sum(sdy, partial);
    sdyx = block_sum(sdyx, partial);
    float k = gamma[ch] * inv_std[ch] / (float)m;
    float fs = (float)sdy, fsx = (float)sdyx;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        long long i = ((long long)(j / spatial) * c + ch) * spatial + j % spatial;
        dx[i] = k * ((float)m * dy[i] - fs - xhat[i] * fsx);
    }
    if (threadIdx.x == 0) {
        dbeta[ch] = fs;
        dgamma[ch] = fsx;
    }
}
