// Checks of the emulator itself, run by build.sh against the libcuda.so.1
// it just built: barriers and shuffles give CUDA's results (with 2-D
// blocks and several warps), the launch errors a GPU gives are given, a
// barrier or shuffle that cannot complete fails the launch instead of
// hanging, new memory reads as NaN, and reading past an allocation's end
// faults. It also checks the host's fp16 rounding (bf16.h, what
// __float2half_rn gives the kernels here) against values computed apart.
// Run as `selftest lazy` with ITERBIN_EMULATOR_STREAMS=lazy, it checks the
// lazy streams instead: work runs in stream order, when CUDA's rules say
// it must have, and not before.

#include <cuda.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bf16.h"
#include "registry.h"

extern "C" __global__ void block_sum(float* out, const float* x) {
    __shared__ float part[256];
    unsigned t = threadIdx.x + blockDim.x * threadIdx.y;
    part[t] = x[blockIdx.x * 256 + t];
    __syncthreads();
    for (unsigned k = 128; k > 0; k >>= 1) {
        if (t < k) part[t] += part[t + k];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = part[0];
}

// out[t] = (sum of the warp by shuffle-down, max by xor, lane 3's value).
extern "C" __global__ void warp_ops(float* out, const float* x) {
    unsigned t = threadIdx.x + blockDim.x * threadIdx.y;
    float v = x[t], s = v, m = v;
    for (int k = 16; k > 0; k >>= 1) s += __shfl_down_sync(0xffffffffu, s, k);
    for (int k = 16; k > 0; k >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, k));
    float third = __shfl_sync(0xffffffffu, v, 3);
    out[3 * t] = s;
    out[3 * t + 1] = m;
    out[3 * t + 2] = third;
}

// Lanes 0-15 and 16-31 shuffle in separate groups: out[t] = x of lane t^1.
extern "C" __global__ void split_warp(float* out, const float* x) {
    unsigned t = threadIdx.x;
    unsigned mask = t < 16 ? 0x0000ffffu : 0xffff0000u;
    out[t] = __shfl_xor_sync(mask, x[t], 1);
}

extern "C" __global__ void divergent_barrier(float* out) {
    if (threadIdx.x < 16) __syncthreads();
    else out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

extern "C" __global__ void shuffle_with_exited(float* out) {
    if (threadIdx.x == 5) return;
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

// Width-16 xor reads an earlier segment (lane 20 ^ 16 = lane 4) but not a
// later one (lane 4 keeps its own); then lanes 16-31 shuffle among
// themselves before the whole warp shuffles, and lane 31 exits before a
// full-mask shuffle no lane reads it in.
extern "C" __global__ void shuffle_rules(float* out, const float* x) {
    unsigned t = threadIdx.x;
    float v = x[t];
    out[t] = __shfl_xor_sync(0xffffffffu, v, 16, 16);
    if (t >= 16) v = __shfl_xor_sync(0xffff0000u, v, 1);
    out[32 + t] = __shfl_sync(0xffffffffu, v, 17);
    if (t == 31) return;
    out[64 + t] = __shfl_sync(0xffffffffu, v, 0);
}

extern "C" __global__ void mixed_shuffles(float* out) {
    unsigned t = threadIdx.x;
    out[t] = t < 16 ? __shfl_xor_sync(0xffffffffu, 1.0f, 1) : __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

extern "C" __global__ void barrier_after_exit(float* out) {
    if (threadIdx.x == 3) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Writes one float before the buffer it is given.
extern "C" __global__ void write_before(float* out) { out[-1] = 0.0f; }

extern "C" __global__ void copy(float* out, const float* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) out[i] = x[i];
}

EMU_KERNEL(block_sum)
EMU_KERNEL(warp_ops)
EMU_KERNEL(split_warp)
EMU_KERNEL(divergent_barrier)
EMU_KERNEL(shuffle_with_exited)
EMU_KERNEL(shuffle_rules)
EMU_KERNEL(mixed_shuffles)
EMU_KERNEL(barrier_after_exit)
EMU_KERNEL(write_before)
EMU_KERNEL(copy)

// out[i] = x[i] + add for i < n.
extern "C" __global__ void add_n(float* out, const float* x, float add, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) out[i] = x[i] + add;
}
EMU_KERNEL(add_n)

namespace {

const char* ptx = R"(.version 7.8
.target sm_80
.visible .entry block_sum(.param .u64 a, .param .u64 b) { ret; }
.visible .entry warp_ops(.param .u64 a, .param .u64 b) { ret; }
.visible .entry split_warp(.param .u64 a, .param .u64 b) { ret; }
.visible .entry divergent_barrier(.param .u64 a) { ret; }
.visible .entry shuffle_with_exited(.param .u64 a) { ret; }
.visible .entry shuffle_rules(.param .u64 a, .param .u64 b) { ret; }
.visible .entry mixed_shuffles(.param .u64 a) { ret; }
.visible .entry barrier_after_exit(.param .u64 a) { ret; }
.visible .entry write_before(.param .u64 a) { ret; }
.visible .entry copy(.param .u64 a, .param .u64 b, .param .u32 n, .param .u32 extra) { ret; }
.visible .entry add_n(.param .u64 a, .param .u64 b, .param .f32 add, .param .u32 n) { ret; }
)";

int failures, checks;

void check(bool ok, const std::string& what) {
    checks++;
    if (!ok) {
        failures++;
        fprintf(stderr, "emulator self-test FAILED: %s\n", what.c_str());
    }
}

CUdeviceptr upload(const std::vector<float>& v) {
    CUdeviceptr p;
    cuMemAlloc(&p, v.size() * 4);
    cuMemcpyHtoD(p, v.data(), v.size() * 4);
    return p;
}

std::vector<float> download(CUdeviceptr p, size_t n) {
    std::vector<float> v(n);
    cuMemcpyDtoH(v.data(), p, n * 4);
    return v;
}

CUfunction function(CUmodule m, const char* name) {
    CUfunction f = nullptr;
    check(cuModuleGetFunction(&f, m, name) == CUDA_SUCCESS, std::string("cuModuleGetFunction ") + name);
    return f;
}

}  // namespace

// lazy_checks checks the lazy streams (ITERBIN_EMULATOR_STREAMS=lazy).
void lazy_checks(CUmodule m) {
    CUstream a, b;
    check(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS && cuStreamCreate(&b, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS,
          "cuStreamCreate");
    CUevent ev;
    cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING);
    float* host = nullptr;
    cuMemAllocHost((void**)&host, 4 * 4);
    CUdeviceptr x = upload({1, 2, 3, 4}), y = upload({0, 0, 0, 0});
    {  // a copy into pinned memory lands when the stream is synchronized
        host[0] = -1;
        cuMemcpyDtoHAsync(host, x, 16, a);
        check(host[0] == -1, "a copy to pinned memory waits for a synchronization");
        cuStreamSynchronize(a);
        check(host[0] == 1 && host[3] == 4, "a copy to pinned memory lands at cuStreamSynchronize");
    }
    {  // a copy from pinned memory reads it when it runs; from pageable memory, when issued
        host[0] = 10;
        cuMemcpyHtoDAsync(x, host, 4, a);
        host[0] = 20;  // too early: the copy has not run
        cuStreamSynchronize(a);
        check(download(x, 1)[0] == 20, "a copy from pinned memory reads it when it runs");
        float pageable[1] = {30};
        cuMemcpyHtoDAsync(x, pageable, 4, a);
        pageable[0] = 40;
        cuStreamSynchronize(a);
        check(download(x, 1)[0] == 30, "a copy from pageable memory takes the data when issued");
    }
    {  // a launch takes its parameters when issued and runs in stream order
        float add = 100;
        int n = 4;
        void* args[] = {&y, &x, &add, &n};
        cuMemsetD32Async(x, 0x3f800000u, 4, a);  // 1.0f
        check(cuLaunchKernel(function(m, "add_n"), 1, 1, 1, 32, 1, 1, 0, a, args, nullptr) == CUDA_SUCCESS, "add_n launch");
        add = 0, n = 1;
        check(download(y, 1)[0] == 0, "a launch waits for a synchronization");
        cuStreamSynchronize(a);
        std::vector<float> got = download(y, 4);
        check(got[0] == 101 && got[3] == 101, "a launch runs after the set before it, with the parameters it was given");
    }
    {  // another stream's work is seen only through an event
        cuMemsetD32Async(x, 0x40000000u, 4, a);  // 2.0f
        cuEventRecord(ev, a);
        float add = 0;
        int n = 4;
        void* args[] = {&y, &x, &add, &n};
        cuLaunchKernel(function(m, "add_n"), 1, 1, 1, 32, 1, 1, 0, b, args, nullptr);
        cuStreamSynchronize(b);
        check(download(y, 1)[0] == 1, "a stream does not wait for another without an event");
        cuStreamWaitEvent(b, ev, 0);
        cuLaunchKernel(function(m, "add_n"), 1, 1, 1, 32, 1, 1, 0, b, args, nullptr);
        cuStreamSynchronize(b);
        check(download(y, 1)[0] == 2, "cuStreamWaitEvent makes a stream wait for the event's work");
        cuMemsetD32Async(x, 0x40400000u, 4, a);  // 3.0f, after the event
        cuEventRecord(ev, a);
        cuEventSynchronize(ev);
        check(download(x, 1)[0] == 3, "cuEventSynchronize waits for the work before the event");
    }
    {  // timing events read before their stream ran are not ready
        CUevent t0, t1;
        cuEventCreate(&t0, 0);
        cuEventCreate(&t1, 0);
        cuEventRecord(t0, a);
        cuEventRecord(t1, a);
        float ms = 0;
        check(cuEventElapsedTime(&ms, t0, t1) == CUDA_ERROR_NOT_READY, "cuEventElapsedTime before the events ran");
        cuEventSynchronize(t1);
        check(cuEventElapsedTime(&ms, t0, t1) == CUDA_SUCCESS && ms >= 0, "cuEventElapsedTime after them");
    }
    {  // a failed launch is reported by the next synchronization
        void* args[] = {&x};
        check(cuLaunchKernel(function(m, "write_before"), 1, 1, 1, 1, 1, 1, 0, a, args, nullptr) == CUDA_SUCCESS,
              "a failing launch is only queued");
        check(cuStreamSynchronize(a) == CUDA_ERROR_LAUNCH_FAILED, "cuStreamSynchronize reports the failed launch");
        check(cuStreamSynchronize(a) == CUDA_SUCCESS, "and only once");
    }
    {  // an event outlives the stream it was recorded on
        CUstream c;
        cuStreamCreate(&c, CU_STREAM_NON_BLOCKING);
        cuMemsetD32Async(x, 0x40800000u, 4, c);  // 4.0f
        cuEventRecord(ev, c);
        cuStreamDestroy(c);
        check(download(x, 1)[0] == 4, "cuStreamDestroy lets the stream's work finish");
        cuStreamWaitEvent(a, ev, 0);
        check(cuEventSynchronize(ev) == CUDA_SUCCESS && cuStreamSynchronize(a) == CUDA_SUCCESS,
              "an event of a destroyed stream can still be waited for");
    }
    {  // a queued record outlives its event, and a later record on another stream
        CUevent e2;
        cuEventCreate(&e2, 0);
        cuMemsetD32Async(x, 0x40a00000u, 4, a);  // 5.0f
        cuEventRecord(e2, a);
        cuEventRecord(e2, b);  // recorded again before the first record ran
        cuStreamWaitEvent(b, e2, 0);
        check(cuEventSynchronize(e2) == CUDA_SUCCESS, "cuEventSynchronize of a re-recorded event");
        check(download(x, 1)[0] == 4, "an event waits for its last record only");
        cuEventDestroy(e2);
        check(cuStreamSynchronize(a) == CUDA_SUCCESS && download(x, 1)[0] == 5, "a record queued before its event was destroyed runs");
    }
    {  // a wait queued on an event whose stream is destroyed before the wait runs
        CUstream c;
        cuStreamCreate(&c, CU_STREAM_NON_BLOCKING);
        cuMemsetD32Async(x, 0x40c00000u, 4, c);  // 6.0f
        cuEventRecord(ev, c);
        cuStreamWaitEvent(a, ev, 0);
        cuStreamDestroy(c);
        check(cuStreamSynchronize(a) == CUDA_SUCCESS && download(x, 1)[0] == 6, "a wait on a destroyed stream's event");
    }
    cuMemFreeHost(host);
    cuStreamDestroy(a);
    cuStreamDestroy(b);
}

int main(int argc, char** argv) {
    cuInit(0);
    CUdevice dev;
    CUcontext ctx;
    cuDeviceGet(&dev, 0);
    cuCtxCreate(&ctx, 0, dev);
    CUmodule m;
    check(cuModuleLoadData(&m, ptx) == CUDA_SUCCESS, "cuModuleLoadData");
    if (argc > 1 && std::string(argv[1]) == "lazy") {
        lazy_checks(m);
        if (failures) {
            fprintf(stderr, "emulator self-test, lazy streams: %d of %d checks failed\n", failures, checks);
            return 1;
        }
        printf("emulator self-test, lazy streams: %d checks passed\n", checks);
        return 0;
    }

    {  // block reduction over a 64×4 block, three blocks
        std::vector<float> x(3 * 256);
        for (size_t i = 0; i < x.size(); i++) x[i] = (float)(i % 97);
        CUdeviceptr dx = upload(x), out;
        cuMemAlloc(&out, 3 * 4);
        void* args[] = {&out, &dx};
        check(cuLaunchKernel(function(m, "block_sum"), 3, 1, 1, 64, 4, 1, 0, nullptr, args, nullptr) == CUDA_SUCCESS, "block_sum launch");
        std::vector<float> got = download(out, 3);
        for (int b = 0; b < 3; b++) {
            float want = 0;
            for (int i = 0; i < 256; i++) want += x[b * 256 + i];
            check(got[b] == want, "block_sum block " + std::to_string(b));
        }
    }
    {  // shuffles over a 16×4 block: two warps, each spanning two rows
        std::vector<float> x(64);
        for (int i = 0; i < 64; i++) x[i] = (float)((i * 37) % 64);
        CUdeviceptr dx = upload(x), out;
        cuMemAlloc(&out, 3 * 64 * 4);
        void* args[] = {&out, &dx};
        check(cuLaunchKernel(function(m, "warp_ops"), 1, 1, 1, 16, 4, 1, 0, nullptr, args, nullptr) == CUDA_SUCCESS, "warp_ops launch");
        std::vector<float> got = download(out, 3 * 64);
        for (int t = 0; t < 64; t++) {
            int w = t / 32 * 32, lane = t % 32;
            // Shuffle-down sums reach lane 0 in full; lane L holds a partial sum
            // over lanes L, L+1, ... of the doubling tree, computed here the same way.
            std::vector<float> s(x.begin() + w, x.begin() + w + 32);
            for (int k = 16; k > 0; k >>= 1) {
                std::vector<float> next(s);
                for (int l = 0; l < 32; l++) next[l] = s[l] + (l + k < 32 ? s[l + k] : s[l]);
                s = next;
            }
            float mx = x[w];
            for (int l = 1; l < 32; l++) mx = fmaxf(mx, x[w + l]);
            check(got[3 * t] == s[lane], "shuffle-down sum, thread " + std::to_string(t));
            check(got[3 * t + 1] == mx, "xor max, thread " + std::to_string(t));
            check(got[3 * t + 2] == x[w + 3], "shuffle from lane 3, thread " + std::to_string(t));
        }
    }
    {  // disjoint shuffle groups in one warp
        std::vector<float> x(32);
        for (int i = 0; i < 32; i++) x[i] = (float)i;
        CUdeviceptr dx = upload(x), out;
        cuMemAlloc(&out, 32 * 4);
        void* args[] = {&out, &dx};
        check(cuLaunchKernel(function(m, "split_warp"), 1, 1, 1, 32, 1, 1, 0, nullptr, args, nullptr) == CUDA_SUCCESS, "split_warp launch");
        std::vector<float> got = download(out, 32);
        for (int t = 0; t < 32; t++) check(got[t] == (float)(t ^ 1), "split warp, lane " + std::to_string(t));
    }
    {  // shuffle rules
        std::vector<float> x(32);
        for (int i = 0; i < 32; i++) x[i] = (float)(100 + i);
        CUdeviceptr dx = upload(x), out;
        cuMemAlloc(&out, 96 * 4);
        void* args[] = {&out, &dx};
        check(cuLaunchKernel(function(m, "shuffle_rules"), 1, 1, 1, 32, 1, 1, 0, nullptr, args, nullptr) == CUDA_SUCCESS, "shuffle_rules launch");
        std::vector<float> got = download(out, 96);
        for (int t = 0; t < 32; t++) {
            check(got[t] == x[t < 16 ? t : t - 16], "width-16 xor, lane " + std::to_string(t));
            check(got[32 + t] == x[16], "full shuffle after a half-warp one, lane " + std::to_string(t));
            if (t < 31) check(got[64 + t] == x[0], "full shuffle with an exited lane, lane " + std::to_string(t));
        }
    }
    CUdeviceptr scratch;
    cuMemAlloc(&scratch, 1024 * 4);
    {  // what must fail
        void* one[] = {&scratch};
        fprintf(stderr, "emulator self-test: the next ten errors are expected\n");
        check(cuLaunchKernel(function(m, "divergent_barrier"), 1, 1, 1, 32, 1, 1, 0, nullptr, one, nullptr) == CUDA_ERROR_LAUNCH_FAILED,
              "a barrier half the block skips fails the launch");
        check(cuLaunchKernel(function(m, "shuffle_with_exited"), 1, 1, 1, 32, 1, 1, 0, nullptr, one, nullptr) == CUDA_ERROR_LAUNCH_FAILED,
              "a shuffle naming an exited lane fails the launch");
        check(cuLaunchKernel(function(m, "divergent_barrier"), 1, 1, 1, 2048, 1, 1, 0, nullptr, one, nullptr) == CUDA_ERROR_INVALID_VALUE,
              "2048 threads a block is refused");
        CUfunction f = nullptr;
        check(cuModuleGetFunction(&f, m, "copy") == CUDA_ERROR_INVALID_PTX, "a kernel whose PTX has another parameter count is refused");
        check(cuLaunchKernel(function(m, "mixed_shuffles"), 1, 1, 1, 32, 1, 1, 0, nullptr, one, nullptr) == CUDA_ERROR_LAUNCH_FAILED,
              "lanes of one mask at different kinds of shuffle fail the launch");
        check(cuLaunchKernel(function(m, "barrier_after_exit"), 1, 1, 1, 32, 1, 1, 0, nullptr, one, nullptr) == CUDA_ERROR_LAUNCH_FAILED,
              "a barrier some threads exited before fails the launch");
        CUdeviceptr middle = scratch + 4;
        void* at_middle[] = {&middle};
        check(cuLaunchKernel(function(m, "write_before"), 1, 1, 1, 1, 1, 1, 0, nullptr, at_middle, nullptr) == CUDA_SUCCESS,
              "a write inside the buffer it is given is fine");
        void* at_start[] = {&scratch};
        check(cuLaunchKernel(function(m, "write_before"), 1, 1, 1, 1, 1, 1, 0, nullptr, at_start, nullptr) == CUDA_ERROR_LAUNCH_FAILED,
              "a write before the buffer fails the launch");
        std::vector<float> host(4);
        CUdeviceptr host_pointer = (CUdeviceptr)(uintptr_t)host.data();
        void* at_host[] = {&host_pointer};
        check(cuLaunchKernel(function(m, "write_before"), 1, 1, 1, 1, 1, 1, 0, nullptr, at_host, nullptr) == CUDA_ERROR_ILLEGAL_ADDRESS,
              "a host pointer as a kernel argument is refused");
        check(cuMemcpyDtoD(scratch + 4, scratch, 64) == CUDA_ERROR_INVALID_VALUE, "an overlapping device copy is refused");
    }
    {  // no context on a thread: memory calls fail
        CUcontext popped;
        cuCtxPopCurrent(&popped);
        CUdeviceptr p;
        check(cuMemAlloc(&p, 16) == CUDA_ERROR_INVALID_CONTEXT, "cuMemAlloc without a current context is refused");
        cuCtxPushCurrent(popped);
    }
    {  // fp16 rounding: every finite fp16 value, its neighbours' midpoints, the edges
        // f16_value is fp16 bits h's value by exponent arithmetic (h finite, positive).
        auto f16_value = [](int h) {
            int e = h >> 10, m = h & 0x3ff;
            return e == 0 ? std::ldexp((double)m, -24) : std::ldexp((double)(1024 + m), e - 25);
        };
        bool widen = true, exact = true, ties = true, between = true;
        for (int h = 0; h <= 0x7bff; h++) {
            double v = f16_value(h);
            widen = widen && emu::f16_float((uint16_t)h) == (float)v && emu::f16_float((uint16_t)(h | 0x8000)) == -(float)v;
            exact = exact && emu::f16_bits((float)v) == h && emu::f16_bits(-(float)v) == (h | 0x8000);
            double next = h == 0x7bff ? 65536.0 : f16_value(h + 1);  // 65536: where Inf begins
            float mid = (float)((v + next) / 2);
            int even = (h & 1) == 0 ? h : h + 1;
            ties = ties && emu::f16_bits(mid) == even;
            between = between && emu::f16_bits(std::nextafter(mid, 0.0f)) == h && emu::f16_bits(std::nextafter(mid, 1e30f)) == h + 1;
        }
        check(widen, "fp16 widening of every finite value");
        check(exact, "fp16 rounding keeps every fp16 value");
        check(ties, "fp16 rounding sends midpoints to the even neighbour (65520 to Inf)");
        check(between, "fp16 rounding sends values beside a midpoint to the nearer neighbour");
        check(emu::f16_bits(INFINITY) == 0x7c00 && emu::f16_bits(-INFINITY) == 0xfc00 && emu::f16_bits(1e6f) == 0x7c00, "fp16 overflow is Inf");
        check(std::isnan(emu::f16_float(emu::f16_bits(NAN))) && std::isinf(emu::f16_float(0x7c00)), "fp16 NaN and Inf widen as such");
        check(emu::f16_bits(1e-9f) == 0 && emu::f16_bits(std::ldexp(1.0f, -25)) == 0 && emu::f16_bits(std::ldexp(1.5f, -25)) == 1,
              "fp16 underflow rounds to zero or the smallest subnormal");
    }
    {  // fresh memory is NaN; a grid-stride copy reaches every element
        CUdeviceptr fresh;
        cuMemAlloc(&fresh, 10 * 4);
        std::vector<float> got = download(fresh, 10);
        bool nan = true;
        for (float v : got) nan = nan && std::isnan(v);
        check(nan, "a new allocation reads as NaN");
    }
    {  // reading one float past an allocation's end faults
        CUdeviceptr p;
        cuMemAlloc(&p, 16 * 4);
        pid_t child = fork();
        if (child == 0) {
            volatile float* f = (volatile float*)(uintptr_t)p;
            float v = f[16];
            _exit(v == v ? 0 : 0);
        }
        int status = 0;
        waitpid(child, &status, 0);
        check(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "reading past an allocation's end faults");
    }
    if (failures) {
        fprintf(stderr, "emulator self-test: %d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("emulator self-test: %d checks passed\n", checks);
    return 0;
}
