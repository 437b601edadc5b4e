// A CPU test double of cuDNN 9, built as libcudnn.so.9, so that the CUDA
// backend's tests (go test -tags cuda ./cuda/) can run without a GPU. It
// exports the legacy convolution API cuda/cudnn.go looks up with dlsym,
// with the signatures, enum values and cuDNN 9 status codes of
// cudnn_graph.h, cudnn_ops.h and cudnn_cnn.h. Device pointers are host
// pointers; every call finishes before it returns, after the work the
// emulated driver queued on the handle's stream (stream.h).
//
// Convolutions are 2-d cross-correlations (padding, stride, dilation) of
// NCHW or NHWC tensors (filters K×C×R×S or K×R×S×C), float, half or
// bfloat16 with a float compute type: forward, backward data and backward filter,
// out = alpha·result + beta·out, out unread where beta = 0. Sums are taken
// in double and rounded once to the output type. Float data runs as TF32
// (inputs rounded to 10 mantissa bits) unless the math type is
// CUDNN_FMA_MATH, as on Ampere and newer. Algorithms 0 to 2 of each
// direction are emulated, 1 and 2 with a workspace (the backward FFTs, 2,
// take only stride 1, no dilation, float NCHW); others are not supported.
// Errors return cuDNN's status and print one line to stderr.

#include "bf16.h"
#include "diagnostic.h"
#include "stream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <thread>
#include <unordered_map>
#include <vector>

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace {

// cudnnStatus_t, cuDNN 9 numbering
constexpr int kSuccess = 0, kBadParam = 2000, kNotSupported = 3000, kHostAllocFailed = 4003,
              kDeviceAllocFailed = 4004;
constexpr int kFloat = 0, kHalf = 2, kBF16 = 9;                        // cudnnDataType_t
constexpr int kNCHW = 0, kNHWC = 1, kNCHWVectC = 2;           // cudnnTensorFormat_t
constexpr int kCrossCorrelation = 1;                          // cudnnConvolutionMode_t (CUDNN_CONVOLUTION = 0)
constexpr int kDefaultMath = 0, kFMAMath = 3;                 // cudnnMathType_t (TENSOR_OP 1, ALLOW_CONVERSION 2)
constexpr int kNonDeterministic = 0, kDeterministic = 1;      // cudnnDeterminism_t
constexpr int kAlgoCount[3] = {8, 6, 7};                      // CUDNN_CONVOLUTION_{FWD,BWD_DATA,BWD_FILTER}_ALGO_COUNT
constexpr size_t kWorkspace[3] = {0, 1024, 4096};             // bytes each emulated algorithm asks for
const char* const kDirName[3] = {"forward", "backward data", "backward filter"};

int fail(int status, const char* fn, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emu::report_status("cuDNN", status, fn, fmt, ap);
    va_end(ap);
    return status;
}

enum Kind { kHandle, kTensor, kFilter, kConv };
const char* const kKindName[4] = {"handle", "tensor descriptor", "filter descriptor", "convolution descriptor"};

// Obj is a handle or a descriptor: a 4-d tensor (n, c, h, w), a filter
// (k, c, r, s) or a 2-d convolution.
struct Obj {
    Kind kind;
    bool set = false;
    int dtype = 0, format = 0, n = 0, c = 0, h = 0, w = 0;
    int pad_h = 0, pad_w = 0, u = 0, v = 0, dil_h = 0, dil_w = 0, mode = 0, compute = 0;
    int math = kDefaultMath;  // a new convolution descriptor's cudnnMathType_t
    void* stream = nullptr;   // a handle's stream (cudnnSetStream)
};

std::mutex live_mu;
std::unordered_map<const void*, Obj*> live;  // objects created and not destroyed

Obj* lookup(const void* p, Kind kind) {
    std::lock_guard<std::mutex> lock(live_mu);
    auto it = live.find(p);
    return it != live.end() && it->second->kind == kind ? it->second : nullptr;
}

int create(void** out, Kind kind, const char* fn) {
    if (!out) return fail(kBadParam, fn, "output pointer is NULL");
    Obj* o = new (std::nothrow) Obj{kind};
    if (!o) return fail(kHostAllocFailed, fn, "out of host memory");
    std::lock_guard<std::mutex> lock(live_mu);
    live[o] = o;
    *out = o;
    return kSuccess;
}

int destroy(void* p, Kind kind, const char* fn) {
    if (!p && kind != kHandle) return kSuccess;  // destroying a NULL descriptor does nothing
    std::lock_guard<std::mutex> lock(live_mu);
    auto it = live.find(p);
    if (it == live.end() || it->second->kind != kind)
        return fail(kBadParam, fn, "%p is not a live %s (never created, or destroyed twice)", p, kKindName[kind]);
    delete it->second;
    live.erase(it);
    return kSuccess;
}

// get finds the set descriptor of kind at p, named what in diagnostics.
int get(const char* fn, const char* what, const void* p, Kind kind, Obj*& out) {
    if (!(out = lookup(p, kind))) return fail(kBadParam, fn, "%s %p is not a live %s", what, p, kKindName[kind]);
    if (!out->set) return fail(kBadParam, fn, "%s %p was created but never set", what, p);
    return kSuccess;
}

bool known_dtype(int t) { return t >= 0 && t <= 21; }

int set4d(const char* fn, void* d, Kind kind, int dtype, int format, int n, int c, int h, int w) {
    Obj* t = lookup(d, kind);
    if (!t) return fail(kBadParam, fn, "%p is not a live %s", d, kKindName[kind]);
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return fail(kBadParam, fn, "dimensions %d×%d×%d×%d", n, c, h, w);
    if (format < kNCHW || format > kNCHWVectC) return fail(kBadParam, fn, "invalid cudnnTensorFormat_t %d", format);
    if (!known_dtype(dtype)) return fail(kBadParam, fn, "invalid cudnnDataType_t %d", dtype);
    t->dtype = dtype, t->format = format, t->n = n, t->c = c, t->h = h, t->w = w, t->set = true;
    return kSuccess;
}

// A convolution as one direction sees it, checked: x, w and y whatever the
// direction's argument order.
struct Problem {
    const Obj *x = nullptr, *w = nullptr, *y = nullptr, *c = nullptr;
    bool tf32 = false;
};

// out_dim is an output size (cudnnGetConvolution2dForwardOutputDim's
// formula), 0 where the dilated filter is larger than the padded input.
int out_dim(int in, int pad, int filter, int dil, int stride) {
    int span = in + 2 * pad - ((filter - 1) * dil + 1);
    return span < 0 ? 0 : 1 + span / stride;
}

// validate checks the handle and descriptors of direction dir, given in
// its argument order (in1, in2, out: x, w, y; w, dy, dx; x, dy, dw), and
// fills p.
int validate(const char* fn, int dir, void* handle, void* d1, void* d2, void* cd, void* dout, Problem& p) {
    static const Kind kinds[3][3] = {{kTensor, kFilter, kTensor}, {kFilter, kTensor, kTensor}, {kTensor, kTensor, kFilter}};
    static const char* const names[3][3] = {{"xDesc", "wDesc", "yDesc"}, {"wDesc", "dyDesc", "dxDesc"},
                                            {"xDesc", "dyDesc", "dwDesc"}};
    static const int xi[3] = {0, 2, 0}, wi[3] = {1, 0, 2}, yi[3] = {2, 1, 1};  // where x, w, y are
    if (!lookup(handle, kHandle)) return fail(kBadParam, fn, "handle %p is not live", handle);
    Obj* d[3];
    void* given[3] = {d1, d2, dout};
    for (int i = 0; i < 3; i++)
        if (int st = get(fn, names[dir][i], given[i], kinds[dir][i], d[i])) return st;
    Obj *x = d[xi[dir]], *w = d[wi[dir]], *y = d[yi[dir]], *c;
    if (int st = get(fn, "convDesc", cd, kConv, c)) return st;
    if (c->mode != kCrossCorrelation)
        return fail(kNotSupported, fn, "only CUDNN_CROSS_CORRELATION is emulated (mode %d)", c->mode);
    if (x->dtype != w->dtype || x->dtype != y->dtype)
        return fail(kBadParam, fn, "x, w and y have non-matching data types %d, %d, %d", x->dtype, w->dtype, y->dtype);
    if (x->dtype != kFloat && x->dtype != kHalf && x->dtype != kBF16)
        return fail(kNotSupported, fn, "data type %d is not emulated (FLOAT, HALF and BFLOAT16 are)", x->dtype);
    if (c->compute != kFloat)
        return fail(kNotSupported, fn, "compute type %d (emulated: CUDNN_DATA_FLOAT)", c->compute);
    for (const Obj* o : {x, w, y})
        if (o->format != kNCHW && o->format != kNHWC)
            return fail(kNotSupported, fn, "format %d is not emulated (NCHW and NHWC are)", o->format);
    if (x->c != w->c) return fail(kBadParam, fn, "x has %d channels, the filter %d", x->c, w->c);
    if (y->c != w->n) return fail(kBadParam, fn, "y has %d channels, the filter %d outputs", y->c, w->n);
    if (x->n != y->n) return fail(kBadParam, fn, "x has batch %d, y %d", x->n, y->n);
    int oh = out_dim(x->h, c->pad_h, w->h, c->dil_h, c->u), ow = out_dim(x->w, c->pad_w, w->w, c->dil_w, c->v);
    if (oh <= 0 || ow <= 0) return fail(kBadParam, fn, "the filter is larger than the padded input (output %d×%d)", oh, ow);
    if (y->h != oh || y->w != ow)
        return fail(kBadParam, fn, "y is %d×%d, the convolution's output %d×%d", y->h, y->w, oh, ow);
    p.x = x, p.w = w, p.y = y, p.c = c;
    p.tf32 = x->dtype == kFloat && c->math != kFMAMath;
    return kSuccess;
}

// need is the workspace algorithm algo of direction dir asks for, or -1
// where it does not support the convolution.
long need(int dir, int algo, const Problem& p) {
    if (algo < 0 || algo > 2) return -1;
    const Obj& c = *p.c;
    bool nchw = p.x->format == kNCHW && p.w->format == kNCHW && p.y->format == kNCHW;
    bool fft_ok = c.u == 1 && c.v == 1 && c.dil_h == 1 && c.dil_w == 1 && p.x->dtype == kFloat && nchw;
    return algo == 2 && dir != 0 && !fft_ok ? -1 : (long)kWorkspace[algo];
}

// each calls f(j, i) for every element of d: j its index in channels-last
// order (n, h, w, c), i its index in d's own layout.
template <class F>
void each(const Obj& d, F f) {
    size_t j = 0;
    for (size_t n = 0; n < (size_t)d.n; n++)
        for (size_t h = 0; h < (size_t)d.h; h++)
            for (size_t w = 0; w < (size_t)d.w; w++)
                for (size_t c = 0; c < (size_t)d.c; c++, j++)
                    f(j, d.format == kNHWC ? ((n * d.h + h) * d.w + w) * d.c + c : ((n * d.c + c) * d.h + h) * d.w + w);
}

// load reads a tensor or filter channels-last, rounded to TF32 if tf32.
std::vector<float> load(const Obj& d, const void* p, bool tf32) {
    std::vector<float> v((size_t)d.n * d.h * d.w * d.c);
    each(d, [&](size_t j, size_t i) {
        float f = d.dtype == kBF16   ? emu::bf16_float(static_cast<const uint16_t*>(p)[i])
                  : d.dtype == kHalf ? emu::f16_float(static_cast<const uint16_t*>(p)[i])
                                     : static_cast<const float*>(p)[i];
        v[j] = tf32 ? emu::tf32_round(f) : f;
    });
    return v;
}

// half_from_double rounds d once to bf16 or (dtype kHalf) fp16: to float
// rounding to odd, which keeps what the 16-bit round to nearest even
// needs, then to the 16-bit type.
uint16_t half_from_double(double d, int dtype) {
    float f = (float)d;
    if (std::isfinite(f) && (double)f != d) {
        uint32_t u = emu::float_bits(f);
        if (std::fabs((double)f) > std::fabs(d)) u -= 1;
        f = emu::bits_float(u | 1u);
    }
    return dtype == kHalf ? emu::f16_bits(f) : emu::bf16_bits(f);
}

// half_float widens a bf16 or (dtype kHalf) fp16 value.
float half_float(uint16_t h, int dtype) { return dtype == kHalf ? emu::f16_float(h) : emu::bf16_float(h); }

// store writes out = alpha·acc + beta·out (out unread where beta = 0),
// acc channels-last.
void store(const Obj& d, void* p, const std::vector<double>& acc, double alpha, double beta) {
    uint16_t* q16 = static_cast<uint16_t*>(p);
    float* q32 = static_cast<float*>(p);
    each(d, [&](size_t j, size_t i) {
        double v = alpha * acc[j];
        if (d.dtype == kBF16 || d.dtype == kHalf)
            q16[i] = half_from_double(beta != 0 ? v + beta * half_float(q16[i], d.dtype) : v, d.dtype);
        else
            q32[i] = (float)(beta != 0 ? v + beta * q32[i] : v);
    });
}

// parallel_for runs f(lo, hi) over [0, n) on the host's cores when work
// (multiply-adds) makes threads worth starting.
template <class F>
void parallel_for(size_t n, double work, F f) {
    size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), n);
    if (work < (1 << 20) || threads <= 1) return f(size_t(0), n);
    std::vector<std::thread> pool;
    for (size_t lo = 0, chunk = (n + threads - 1) / threads; lo < n; lo += chunk) {
        try {
            pool.emplace_back(f, lo, std::min(n, lo + chunk));
        } catch (...) {
            f(lo, std::min(n, lo + chunk));  // serially where a thread does not start
        }
    }
    for (auto& t : pool) t.join();
}

// compute runs direction dir: in1, in2 → out in the direction's order
// (x, w → y; w, dy → dx; x, dy → dw). Every tap pairs a channels-last run
// of x at (n, ih, iw) with one of w at (k, r, s) and dy at (n, oh, ow, k).
// Threads split n (forward, backward data) or k (backward filter), so each
// writes its own outputs, in a fixed order.
void compute(int dir, const Problem& p, const void* in1, const void* in2, void* out, double alpha, double beta) {
    const Obj &X = *p.x, &Wd = *p.w, &Y = *p.y, &cv = *p.c;
    const size_t N = X.n, C = X.c, H = X.h, W = X.w, K = Wd.n, R = Wd.h, S = Wd.w, OH = Y.h, OW = Y.w;
    std::vector<float> x = dir == 1 ? std::vector<float>() : load(X, in1, p.tf32);
    std::vector<float> w = dir == 2 ? std::vector<float>() : load(Wd, dir == 0 ? in2 : in1, p.tf32);
    std::vector<float> dy = dir == 0 ? std::vector<float>() : load(Y, in2, p.tf32);
    std::vector<double> acc(dir == 0 ? N * OH * OW * K : dir == 1 ? N * H * W * C : K * R * S * C);
    if (dir == 0) {
        // Forward as rows of axpys, which vectorize: wt is w transposed to
        // (r, s, c, k), and each output pixel's K sums run side by side.
        std::vector<float> wt(R * S * C * K);
        for (size_t k = 0; k < K; k++)
            for (size_t rsc = 0; rsc < R * S * C; rsc++) wt[rsc * K + k] = w[k * R * S * C + rsc];
        parallel_for(N, (double)N * OH * OW * K * R * S * C, [&](size_t lo, size_t hi) {
            for (size_t n = lo; n < hi; n++)
                for (size_t oh = 0; oh < OH; oh++)
                    for (size_t ow = 0; ow < OW; ow++) {
                        double* sum = &acc[((n * OH + oh) * OW + ow) * K];
                        for (size_t r = 0; r < R; r++) {
                            long ih = (long)(oh * cv.u + r * cv.dil_h) - cv.pad_h;
                            for (size_t s = 0; s < S && ih >= 0 && ih < (long)H; s++) {
                                long iw = (long)(ow * cv.v + s * cv.dil_w) - cv.pad_w;
                                if (iw < 0 || iw >= (long)W) continue;
                                const float* xs = &x[((n * H + ih) * W + iw) * C];
                                const float* ws = &wt[(r * S + s) * C * K];
                                for (size_t c = 0; c < C; c++) {
                                    double xv = xs[c];
                                    const float* wk = ws + c * K;
                                    for (size_t k = 0; k < K; k++) sum[k] += xv * wk[k];
                                }
                            }
                        }
                    }
        });
        store(Y, out, acc, alpha, beta);
        return;
    }
    parallel_for(dir == 2 ? K : N, (double)N * OH * OW * K * R * S * C, [&](size_t lo, size_t hi) {
        size_t n0 = dir == 2 ? 0 : lo, n1 = dir == 2 ? N : hi, k0 = dir == 2 ? lo : 0, k1 = dir == 2 ? hi : K;
        for (size_t n = n0; n < n1; n++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++)
                    for (size_t k = k0; k < k1; k++) {
                        size_t yi = ((n * OH + oh) * OW + ow) * K + k;
                        double g = dir == 0 ? 0 : dy[yi], sum = 0;
                        for (size_t r = 0; r < R; r++) {
                            long ih = (long)(oh * cv.u + r * cv.dil_h) - cv.pad_h;
                            for (size_t s = 0; s < S && ih >= 0 && ih < (long)H; s++) {
                                long iw = (long)(ow * cv.v + s * cv.dil_w) - cv.pad_w;
                                if (iw < 0 || iw >= (long)W) continue;
                                size_t xi = ((n * H + ih) * W + iw) * C, wi = ((k * R + r) * S + s) * C;
                                if (dir == 0)
                                    for (size_t c = 0; c < C; c++) sum += (double)x[xi + c] * w[wi + c];
                                else if (dir == 1)
                                    for (size_t c = 0; c < C; c++) acc[xi + c] += g * w[wi + c];
                                else
                                    for (size_t c = 0; c < C; c++) acc[wi + c] += g * x[xi + c];
                            }
                        }
                        if (dir == 0) acc[yi] = sum;
                    }
    });
    store(dir == 0 ? Y : dir == 1 ? X : Wd, out, acc, alpha, beta);
}

// check_algo checks that algo is one of direction dir and supports p, and
// sets n to the workspace it needs. An algorithm that does not support p
// is reported on stderr only when asked (running one is a mistake; asking
// for its workspace is how callers find out).
int check_algo(const char* fn, int dir, int algo, const Problem& p, long& n, bool report_unsupported) {
    if (algo < 0 || algo >= kAlgoCount[dir]) return fail(kBadParam, fn, "invalid %s algorithm %d", kDirName[dir], algo);
    if ((n = need(dir, algo, p)) < 0) {
        if (!report_unsupported) return kNotSupported;
        return fail(kNotSupported, fn, "%s algorithm %d does not support this convolution", kDirName[dir], algo);
    }
    return kSuccess;
}

// Perf is cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t.
struct Perf {
    int algo, status;
    float time;  // milliseconds
    size_t memory;
    int determinism, mathType, reserved[3];
};

int convolve(int dir, const char* fn, void* handle, const void* alpha, void* d1, const void* in1, void* d2,
             const void* in2, void* cd, int algo, void* ws, size_t ws_bytes, const void* beta, void* dout, void* out) {
    Problem p;
    if (int st = validate(fn, dir, handle, d1, d2, cd, dout, p)) return st;
    if (!alpha || !beta || !in1 || !in2 || !out)
        return fail(kBadParam, fn, "NULL pointer (alpha %p, beta %p, operands %p %p, output %p)", alpha, beta, in1, in2, out);
    long n = 0;
    if (int st = check_algo(fn, dir, algo, p, n, true)) return st;
    if (n > 0 && (!ws || ws_bytes < (size_t)n))
        return fail(kBadParam, fn, "%s algorithm %d needs %ld bytes of workspace, got %zu at %p", kDirName[dir], algo, n,
                    ws_bytes, ws);
    emu::drain_stream(lookup(handle, kHandle)->stream);
    try {
        compute(dir, p, in1, in2, out, *static_cast<const float*>(alpha), *static_cast<const float*>(beta));
    } catch (const std::bad_alloc&) {
        return fail(kHostAllocFailed, fn, "out of host memory");
    }
    return kSuccess;
}

// find "runs" every emulated algorithm that fits the workspace (the
// output written once), and reports them fastest first, then the ones that
// cannot run.
int find(int dir, const char* fn, void* handle, void* d1, const void* in1, void* d2, const void* in2, void* cd,
         void* dout, void* out, int requested, int* returned, Perf* perf, void* ws, size_t ws_bytes) {
    Problem p;
    if (int st = validate(fn, dir, handle, d1, d2, cd, dout, p)) return st;
    if (!in1 || !in2 || !out || !returned || !perf)
        return fail(kBadParam, fn, "NULL pointer (operands %p %p, output %p, returnedAlgoCount %p, perfResults %p)", in1,
                    in2, out, (void*)returned, (void*)perf);
    if (requested <= 0) return fail(kBadParam, fn, "requestedAlgoCount %d", requested);
    emu::drain_stream(lookup(handle, kHandle)->stream);
    // The convolution runs once, timed; each algorithm reports that time
    // scaled by 1 + algo/20, so the list has a fixed order and spread
    // without computing the same output once per algorithm (and the
    // deterministic algorithm 1 is within chooseAlgo's slack of the
    // nondeterministic algorithm 0).
    float ms = -1.0f;
    std::vector<Perf> results;
    for (int algo = 0; algo < kAlgoCount[dir]; algo++) {
        // As in cuDNN, backward data and backward filter algorithm 0 sum
        // with atomics: nondeterministic.
        int determinism = dir != 0 && algo == 0 ? kNonDeterministic : kDeterministic;
        Perf r{algo, kSuccess, -1.0f, 0, determinism, p.c->math, {0, 0, 0}};
        long n = need(dir, algo, p);
        if (n < 0) {
            r.status = kNotSupported;
        } else if (n > 0 && (!ws || ws_bytes < (size_t)n)) {
            r.status = kDeviceAllocFailed, r.memory = n;
        } else {
            if (ms < 0) {
                auto t0 = std::chrono::steady_clock::now();
                try {
                    compute(dir, p, in1, in2, out, 1.0, 0.0);
                } catch (const std::bad_alloc&) {
                    return fail(kHostAllocFailed, fn, "out of host memory");
                }
                ms = std::chrono::duration<float, std::milli>(std::chrono::steady_clock::now() - t0).count();
            }
            r.time = ms * (1.0f + 0.05f * (float)algo);
            r.memory = n;
        }
        results.push_back(r);
    }
    if (ms >= 0) {
        // Find leaves the output undefined (it is a timing buffer to
        // cuDNN): all bits set, so a caller that read it would see NaN.
        const Obj& o = dir == 0 ? *p.y : dir == 1 ? *p.x : *p.w;
        std::memset(out, 0xff, (size_t)o.n * o.c * o.h * o.w * (o.dtype == kBF16 || o.dtype == kHalf ? 2 : 4));
    }
    std::stable_sort(results.begin(), results.end(), [](const Perf& a, const Perf& b) {
        if ((a.status == kSuccess) != (b.status == kSuccess)) return a.status == kSuccess;
        return a.status == kSuccess && a.time < b.time;
    });
    *returned = std::min(requested, (int)results.size());
    std::copy(results.begin(), results.begin() + *returned, perf);
    return kSuccess;
}

int workspace(int dir, const char* fn, void* handle, void* d1, void* d2, void* cd, void* dout, int algo, size_t* bytes) {
    Problem p;
    if (int st = validate(fn, dir, handle, d1, d2, cd, dout, p)) return st;
    if (!bytes) return fail(kBadParam, fn, "sizeInBytes is NULL");
    long n = 0;
    if (int st = check_algo(fn, dir, algo, p, n, false)) return st;
    *bytes = (size_t)n;
    return kSuccess;
}

int max_count(int dir, const char* fn, void* handle, int* count) {
    if (!lookup(handle, kHandle)) return fail(kBadParam, fn, "handle %p is not live", handle);
    if (!count) return fail(kBadParam, fn, "count is NULL");
    *count = kAlgoCount[dir];
    return kSuccess;
}

}  // namespace

EXPORT size_t cudnnGetVersion(void) { return 90100; }  // 9.1.0: CUDNN_MAJOR·10000 + MINOR·100 + PATCHLEVEL

EXPORT const char* cudnnGetErrorString(int status) {
    switch (status) {
    case kSuccess: return "CUDNN_STATUS_SUCCESS";
    case kBadParam: return "CUDNN_STATUS_BAD_PARAM";
    case kNotSupported: return "CUDNN_STATUS_NOT_SUPPORTED";
    case kHostAllocFailed: return "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED";
    case kDeviceAllocFailed: return "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED";
    }
    return "CUDNN_STATUS_UNKNOWN (not a status the emulator returns)";
}

EXPORT int cudnnOpsVersionCheck(void) { return kSuccess; }
EXPORT int cudnnCnnVersionCheck(void) { return kSuccess; }

EXPORT int cudnnCreate(void** h) { return create(h, kHandle, "cudnnCreate"); }
EXPORT int cudnnDestroy(void* h) { return destroy(h, kHandle, "cudnnDestroy"); }
EXPORT int cudnnSetStream(void* h, void* stream) {
    Obj* o = lookup(h, kHandle);
    if (!o) return fail(kBadParam, "cudnnSetStream", "handle %p is not live", h);
    o->stream = stream;
    return kSuccess;
}

EXPORT int cudnnCreateTensorDescriptor(void** d) { return create(d, kTensor, "cudnnCreateTensorDescriptor"); }
EXPORT int cudnnDestroyTensorDescriptor(void* d) { return destroy(d, kTensor, "cudnnDestroyTensorDescriptor"); }
EXPORT int cudnnSetTensor4dDescriptor(void* d, int format, int dtype, int n, int c, int h, int w) {
    return set4d("cudnnSetTensor4dDescriptor", d, kTensor, dtype, format, n, c, h, w);
}
EXPORT int cudnnCreateFilterDescriptor(void** d) { return create(d, kFilter, "cudnnCreateFilterDescriptor"); }
EXPORT int cudnnDestroyFilterDescriptor(void* d) { return destroy(d, kFilter, "cudnnDestroyFilterDescriptor"); }
EXPORT int cudnnSetFilter4dDescriptor(void* d, int dtype, int format, int k, int c, int h, int w) {
    return set4d("cudnnSetFilter4dDescriptor", d, kFilter, dtype, format, k, c, h, w);
}
EXPORT int cudnnCreateConvolutionDescriptor(void** d) { return create(d, kConv, "cudnnCreateConvolutionDescriptor"); }
EXPORT int cudnnDestroyConvolutionDescriptor(void* d) { return destroy(d, kConv, "cudnnDestroyConvolutionDescriptor"); }

EXPORT int cudnnSetConvolution2dDescriptor(void* d, int pad_h, int pad_w, int u, int v, int dil_h, int dil_w, int mode,
                                           int compute) {
    const char* fn = "cudnnSetConvolution2dDescriptor";
    Obj* c = lookup(d, kConv);
    if (!c) return fail(kBadParam, fn, "%p is not a live convolution descriptor", d);
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dil_h <= 0 || dil_w <= 0)
        return fail(kBadParam, fn, "pad %d,%d stride %d,%d dilation %d,%d", pad_h, pad_w, u, v, dil_h, dil_w);
    if (mode != 0 && mode != kCrossCorrelation) return fail(kBadParam, fn, "invalid cudnnConvolutionMode_t %d", mode);
    if (!known_dtype(compute)) return fail(kBadParam, fn, "invalid compute type %d", compute);
    c->pad_h = pad_h, c->pad_w = pad_w, c->u = u, c->v = v, c->dil_h = dil_h, c->dil_w = dil_w;
    c->mode = mode, c->compute = compute, c->set = true;
    return kSuccess;
}

EXPORT int cudnnSetConvolutionMathType(void* d, int math) {
    Obj* c = lookup(d, kConv);
    if (!c) return fail(kBadParam, "cudnnSetConvolutionMathType", "%p is not a live convolution descriptor", d);
    if (math < kDefaultMath || math > kFMAMath)
        return fail(kBadParam, "cudnnSetConvolutionMathType", "invalid cudnnMathType_t %d", math);
    c->math = math;
    return kSuccess;
}

EXPORT int cudnnGetConvolution2dForwardOutputDim(void* cd, void* xd, void* wd, int* n, int* c, int* h, int* w) {
    const char* fn = "cudnnGetConvolution2dForwardOutputDim";
    Obj *cv, *x, *f;
    if (int st = get(fn, "convDesc", cd, kConv, cv)) return st;
    if (int st = get(fn, "inputTensorDesc", xd, kTensor, x)) return st;
    if (int st = get(fn, "filterDesc", wd, kFilter, f)) return st;
    if (!n || !c || !h || !w) return fail(kBadParam, fn, "NULL output pointer");
    if (x->c != f->c) return fail(kBadParam, fn, "input has %d channels, the filter %d", x->c, f->c);
    int oh = out_dim(x->h, cv->pad_h, f->h, cv->dil_h, cv->u), ow = out_dim(x->w, cv->pad_w, f->w, cv->dil_w, cv->v);
    if (oh <= 0 || ow <= 0) return fail(kBadParam, fn, "the filter is larger than the padded input (output %d×%d)", oh, ow);
    *n = x->n, *c = f->n, *h = oh, *w = ow;
    return kSuccess;
}

// Each direction's four calls; their descriptor and operand arguments are
// in the direction's order (see validate).
#define DIRECTION(dir, Name)                                                                                          \
    EXPORT int cudnnGetConvolution##Name##AlgorithmMaxCount(void* h, int* n) {                                       \
        return max_count(dir, "cudnnGetConvolution" #Name "AlgorithmMaxCount", h, n);                               \
    }                                                                                                                 \
    EXPORT int cudnnGetConvolution##Name##WorkspaceSize(void* h, void* d1, void* d2, void* cd, void* dout, int algo, \
                                                        size_t* n) {                                                 \
        return workspace(dir, "cudnnGetConvolution" #Name "WorkspaceSize", h, d1, d2, cd, dout, algo, n);           \
    }                                                                                                                 \
    EXPORT int cudnnFindConvolution##Name##AlgorithmEx(void* h, void* d1, const void* in1, void* d2, const void* in2, \
                                                       void* cd, void* dout, void* out, int requested, int* returned, \
                                                       Perf* perf, void* ws, size_t ws_bytes) {                      \
        return find(dir, "cudnnFindConvolution" #Name "AlgorithmEx", h, d1, in1, d2, in2, cd, dout, out, requested,  \
                    returned, perf, ws, ws_bytes);                                                                    \
    }                                                                                                                 \
    EXPORT int cudnnConvolution##Name(void* h, const void* alpha, void* d1, const void* in1, void* d2,              \
                                      const void* in2, void* cd, int algo, void* ws, size_t ws_bytes,                \
                                      const void* beta, void* dout, void* out) {                                      \
        return convolve(dir, "cudnnConvolution" #Name, h, alpha, d1, in1, d2, in2, cd, algo, ws, ws_bytes, beta,     \
                        dout, out);                                                                                   \
    }

DIRECTION(0, Forward)
DIRECTION(1, BackwardData)
DIRECTION(2, BackwardFilter)
