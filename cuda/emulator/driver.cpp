// A CPU stand-in for the CUDA driver library (libcuda.so.1), so the CUDA
// backend and its tests run on a machine without a GPU: build.sh builds it
// with iterbin's kernels compiled for the host (emu.h, fiber.cpp), and
// LD_LIBRARY_PATH puts it before the real driver.
//
// It implements the driver calls gorgonia.org/cu and the backend make,
// declared by the toolkit's cuda.h. Device memory is host memory: a
// device pointer is the address. By default every call runs to completion
// before it returns, which is one valid order of the work on the streams.
// ITERBIN_EMULATOR_STREAMS (read once, at the first call that needs it)
// picks others:
//   - lazy: work queued on a stream runs as late as CUDA allows: at a
//     synchronization (cuStreamSynchronize, cuEventSynchronize,
//     cuCtxSynchronize, a copy to or from pageable memory, cuMemFree),
//     when a stream reaches a cuStreamWaitEvent on it, or when cuBLAS or
//     cuDNN (the test doubles call iterbin_emulator_drain) run on the
//     stream. A host that reads a pinned buffer before waiting for the
//     copy into it, writes one before the copy out of it has run, or a
//     stream that uses what another wrote without waiting for its event,
//     then sees stale data.
//   - alternate: the first stream created is lazy, the second runs its
//     work when issued (as soon as the events it waits for allow), and so
//     on: a producer stream far ahead of its consumer, which overwrites a
//     buffer the consumer has not read unless it waits for an event.
//
// What it checks that a careless emulation would not:
//   - each allocation ends at a page that faults on access, so reading or
//     writing past the end of a buffer crashes the test instead of
//     passing; new allocations hold NaN (all bits set), so a kernel that
//     reads memory nothing wrote spoils its results;
//   - a launch's dimensions against the GPU's limits, and that the kernel
//     loaded from the PTX takes the number of parameters the PTX declares;
//   - barriers and shuffles reached by every thread they name (fiber.cpp).
// Problems are reported on stderr with the call's name, as well as
// returned as the CUDA error a GPU would give.

#include <cuda.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fiber.h"

namespace emu {

std::map<std::string, kernel_entry>& kernels() {
    static std::map<std::string, kernel_entry> table;
    return table;
}

namespace {

constexpr size_t total_memory = size_t(80) << 30;

// An allocation of bytes at the device pointer that keys it, inside a
// mapping of length bytes from base whose last page faults. The rest of
// the mapping around the buffer (at least a page before it, under 16 bytes
// after it) is a canary: it holds all bits set, and a launch that changes
// it wrote outside a buffer it was given.
struct mapping {
    void* base;
    size_t length;
    size_t bytes;
};

constexpr unsigned char canary = 0xff;

std::mutex memory_lock;
std::map<uintptr_t, mapping> allocations;  // by device pointer
size_t allocated;

CUresult report(CUresult code, const char* call, const std::string& message) {
    fprintf(stderr, "iterbin CUDA emulator: %s: %s\n", call, message.c_str());
    return code;
}

struct module {
    std::map<std::string, int> entries;  // kernel name → parameter count in the PTX
};

struct function {
    std::string name;
    const kernel_entry* kernel;
};

struct stream_state;

// One cuEventRecord: ran turns true, and at is set, when it has run. A
// queued record holds it, never the event, which may be destroyed or
// recorded again before the record runs.
struct record {
    bool ran = false;
    std::chrono::steady_clock::time_point at;
};

// An event and its last record (none before the first); where that was
// queued on a lazy stream, stream and seq say which of the stream's
// operations it is (stream may be gone once the record has run).
struct event {
    unsigned flags = 0;
    std::shared_ptr<record> last;
    stream_state* stream = nullptr;
    uint64_t seq = 0;
};

// pending_record says whether e's last record is queued and has not run.
bool pending_record(const event* e) { return e->last && !e->last->ran; }

// A stream: the operations queued on it and not yet run, where it is lazy.
// queued counts every operation ever queued, done those run; running says
// its operations are being run (a wait on it from inside them is a cycle).
struct stream_state {
    bool blocking = true;  // created without CU_STREAM_NON_BLOCKING: synchronizes with the legacy stream
    bool lazy = false;     // its work waits until it must run (ITERBIN_EMULATOR_STREAMS)
    std::deque<std::function<CUresult()>> ops;
    uint64_t queued = 0, done = 0;
    bool running = false;
};

// stream_lock guards every stream's queue, the list of streams and the
// pinned host buffers; it is recursive because running one stream's
// operations may run another's.
std::recursive_mutex stream_lock;
std::vector<stream_state*> streams;
std::map<uintptr_t, size_t> pinned;  // cuMemAllocHost buffers: start → bytes
// pending is the first error a queued operation returned since the last
// synchronization reported one.
CUresult pending = CUDA_SUCCESS;

// The modes of ITERBIN_EMULATOR_STREAMS.
enum class streams_mode { immediate, lazy, alternate };

streams_mode mode() {
    static const streams_mode m = [] {
        const char* v = getenv("ITERBIN_EMULATOR_STREAMS");
        if (v != nullptr && strcmp(v, "lazy") == 0) return streams_mode::lazy;
        if (v != nullptr && strcmp(v, "alternate") == 0) return streams_mode::alternate;
        if (v != nullptr && *v != '\0')
            report(CUDA_SUCCESS, "ITERBIN_EMULATOR_STREAMS",
                   std::string("\"") + v + "\" is not a mode (lazy, alternate): every call finishes before it returns");
        return streams_mode::immediate;
    }();
    return m;
}

bool lazy_streams() { return mode() != streams_mode::immediate; }
int streams_created;  // how many cuStreamCreate made, for alternate

// stream_of is the queue of a stream handle; nullptr for the legacy and
// per-thread default streams, whose work runs when it is issued.
stream_state* stream_of(CUstream s) {
    uintptr_t h = reinterpret_cast<uintptr_t>(s);
    if (h == 0 || h == (uintptr_t)CU_STREAM_LEGACY || h == (uintptr_t)CU_STREAM_PER_THREAD) return nullptr;
    return reinterpret_cast<stream_state*>(s);
}

CUresult report(CUresult code, const char* call, const std::string& message);

// run_until runs s's queued operations in order until done reaches upto.
void run_until(stream_state* s, uint64_t upto) {
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    if (s->done >= upto) return;
    if (s->running) {
        report(CUDA_ERROR_LAUNCH_FAILED, "cuStreamWaitEvent", "streams wait on each other's later work (a deadlock on a GPU)");
        if (pending == CUDA_SUCCESS) pending = CUDA_ERROR_LAUNCH_FAILED;
        return;
    }
    s->running = true;
    while (s->done < upto && !s->ops.empty()) {
        std::function<CUresult()> op = std::move(s->ops.front());
        s->ops.pop_front();
        CUresult r = op();
        s->done++;
        if (r != CUDA_SUCCESS && pending == CUDA_SUCCESS) pending = r;
    }
    s->running = false;
}

void drain(stream_state* s) { run_until(s, s->queued); }

// drain_blocking runs the streams the legacy default stream waits for.
void drain_blocking() {
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    for (stream_state* s : streams)
        if (s->blocking) drain(s);
}

void drain_all() {
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    for (stream_state* s : streams) drain(s);
}

// take_pending returns the error queued work returned, once.
CUresult take_pending() {
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    CUresult r = pending;
    pending = CUDA_SUCCESS;
    return r;
}

// enqueue runs op now, or queues it on stream st where that is lazy (work
// on the legacy stream first waits for the blocking streams, then runs
// now).
CUresult enqueue(CUstream st, std::function<CUresult()> op) {
    stream_state* s = stream_of(st);
    if (!lazy_streams()) return op();
    if (!s) {
        drain_blocking();
        return op();
    }
    if (!s->lazy) {
        CUresult r = op();
        std::lock_guard<std::recursive_mutex> hold(stream_lock);
        s->queued++, s->done++;
        return r;
    }
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    s->ops.push_back(std::move(op));
    s->queued++;
    return CUDA_SUCCESS;
}

// is_pinned says whether bytes at p lie in a cuMemAllocHost buffer.
bool is_pinned(const void* p, size_t bytes) {
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = pinned.upper_bound(a);
    if (it == pinned.begin()) return false;
    --it;
    return a + bytes <= it->first + it->second;
}

struct context {
    CUdevice device;
};

thread_local std::vector<CUcontext> context_stack;

// ptx_entries reads the kernels a PTX module defines and how many
// parameters each takes.
std::map<std::string, int> ptx_entries(const char* ptx) {
    std::map<std::string, int> entries;
    const char* p = ptx;
    const char* key = ".entry ";
    while ((p = strstr(p, key)) != nullptr) {
        p += strlen(key);
        const char* open = strchr(p, '(');
        if (!open) break;
        std::string name(p, open);
        const char* close = strchr(open, ')');
        if (!close) break;
        int count = 0;
        for (const char* q = open; (q = strstr(q, ".param")) != nullptr && q < close; q += 6) count++;
        entries[name] = count;
        p = close;
    }
    return entries;
}

// allocation_of returns the allocation p points into (its end included,
// where an empty slice may point), or allocations.end(). Hold memory_lock.
std::map<uintptr_t, mapping>::const_iterator allocation_of(uintptr_t p) {
    auto it = allocations.upper_bound(p);
    if (it == allocations.begin()) return allocations.end();
    --it;
    return p <= it->first + it->second.bytes ? it : allocations.end();
}

bool valid_pointer(CUdeviceptr p, size_t bytes) {
    std::lock_guard<std::mutex> hold(memory_lock);
    auto it = allocation_of((uintptr_t)p);
    return it != allocations.end() && (uintptr_t)p + bytes <= it->first + it->second.bytes;
}

// clobbered says where a canary of the allocation at start no longer
// holds, or "" if both are intact. Hold memory_lock.
std::string clobbered(uintptr_t start, const mapping& m) {
    const unsigned char* base = static_cast<const unsigned char*>(m.base);
    const unsigned char* buffer = reinterpret_cast<const unsigned char*>(start);
    const unsigned char* end = base + m.length - (size_t)sysconf(_SC_PAGESIZE);
    for (const unsigned char* q = base; q < buffer; q++) {
        if (*q != canary) return std::to_string(buffer - q) + " bytes before";
    }
    for (const unsigned char* q = buffer + m.bytes; q < end; q++) {
        if (*q != canary) return std::to_string(q - buffer - m.bytes) + " bytes after the end of";
    }
    return "";
}

// reset_canaries sets the canaries of the allocation at start again (so a
// clobbered one is reported once). Hold memory_lock.
void reset_canaries(uintptr_t start, const mapping& m) {
    unsigned char* base = static_cast<unsigned char*>(m.base);
    unsigned char* buffer = reinterpret_cast<unsigned char*>(start);
    unsigned char* end = base + m.length - (size_t)sysconf(_SC_PAGESIZE);
    memset(base, canary, (size_t)(buffer - base));
    memset(buffer + m.bytes, canary, (size_t)(end - buffer - m.bytes));
}

bool initialized;  // cuInit was called

// need_context says why the calling thread cannot make a call on memory,
// streams, events, modules or launches: no cuInit, or no current context.

CUresult need_context(const char* call) {
    if (!initialized) return report(CUDA_ERROR_NOT_INITIALIZED, call, "cuInit was not called");
    if (context_stack.empty() || !context_stack.back()) return report(CUDA_ERROR_INVALID_CONTEXT, call, "no context is current on this thread");
    return CUDA_SUCCESS;
}

CUresult check_range(const char* call, CUdeviceptr p, size_t bytes) {
    if (CUresult r = need_context(call)) return r;
    if (bytes == 0 || valid_pointer(p, bytes)) return CUDA_SUCCESS;
    char buf[128];
    snprintf(buf, sizeof buf, "%zu bytes at 0x%llx are not inside one allocation", bytes, (unsigned long long)p);
    return report(CUDA_ERROR_INVALID_VALUE, call, buf);
}

// check_copy checks a device-to-device copy's ranges.
CUresult check_copy(const char* call, CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = check_range(call, dst, bytes)) return r;
    if (CUresult r = check_range(call, src, bytes)) return r;
    if (dst != src && dst < src + bytes && src < dst + bytes)
        return report(CUDA_ERROR_INVALID_VALUE, call, "the source and destination overlap (undefined in CUDA)");
    return CUDA_SUCCESS;
}

// fill sets n elements of type T at dst to v, on stream st (nullptr: the
// legacy stream, synchronously).
template <class T> CUresult fill(const char* call, CUdeviceptr dst, T v, size_t n, CUstream st) {
    if (CUresult r = check_range(call, dst, sizeof(T) * n)) return r;
    return enqueue(st, [=] {
        for (size_t i = 0; i < n; i++) reinterpret_cast<T*>((uintptr_t)dst)[i] = v;
        return CUDA_SUCCESS;
    });
}

}  // namespace
}  // namespace emu

using namespace emu;

extern "C" {

CUresult cuInit(unsigned int flags) {
    if (flags != 0) return report(CUDA_ERROR_INVALID_VALUE, "cuInit", "flags must be 0");
    initialized = true;
    return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* version) {
    *version = 11080;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* count) {
    if (!initialized) return report(CUDA_ERROR_NOT_INITIALIZED, "cuDeviceGetCount", "cuInit was not called");
    *count = 1;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (!initialized) return report(CUDA_ERROR_NOT_INITIALIZED, "cuDeviceGet", "cuInit was not called");
    if (ordinal != 0) return report(CUDA_ERROR_INVALID_DEVICE, "cuDeviceGet", "the emulator has one device, 0");
    *device = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    snprintf(name, (size_t)len, "iterbin CPU emulator");
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem(size_t* bytes, CUdevice) {
    *bytes = total_memory;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute attribute, CUdevice) {
    switch (attribute) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 8; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = 4; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *value = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *value = 48 << 10; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *value = 2048; break;
    default: return report(CUDA_ERROR_NOT_SUPPORTED, "cuDeviceGetAttribute", "attribute " + std::to_string((int)attribute) + " is not emulated");
    }
    return CUDA_SUCCESS;
}

CUresult cuCtxCreate(CUcontext* ctx, unsigned int, CUdevice device) {
    *ctx = reinterpret_cast<CUcontext>(new context{device});
    context_stack.push_back(*ctx);
    return CUDA_SUCCESS;
}

CUresult cuCtxDestroy(CUcontext ctx) {
    if (!ctx) return report(CUDA_ERROR_INVALID_VALUE, "cuCtxDestroy", "null context");
    drain_all();
    for (auto it = context_stack.begin(); it != context_stack.end();) it = *it == ctx ? context_stack.erase(it) : it + 1;
    delete reinterpret_cast<context*>(ctx);
    return CUDA_SUCCESS;
}

CUresult cuCtxPushCurrent(CUcontext ctx) {
    context_stack.push_back(ctx);
    return CUDA_SUCCESS;
}

CUresult cuCtxPopCurrent(CUcontext* ctx) {
    if (context_stack.empty()) return report(CUDA_ERROR_INVALID_CONTEXT, "cuCtxPopCurrent", "no current context");
    if (ctx) *ctx = context_stack.back();
    context_stack.pop_back();
    return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx) {
    if (!ctx) {
        if (!context_stack.empty()) context_stack.pop_back();
    } else if (context_stack.empty()) {
        context_stack.push_back(ctx);
    } else {
        context_stack.back() = ctx;
    }
    return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext* ctx) {
    *ctx = context_stack.empty() ? nullptr : context_stack.back();
    return CUDA_SUCCESS;
}

CUresult cuCtxGetDevice(CUdevice* device) {
    if (context_stack.empty() || !context_stack.back()) return report(CUDA_ERROR_INVALID_CONTEXT, "cuCtxGetDevice", "no current context");
    *device = reinterpret_cast<context*>(context_stack.back())->device;
    return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize() {
    drain_all();
    return take_pending();
}

CUresult cuMemAlloc(CUdeviceptr* dptr, size_t bytes) {
    if (CUresult r = need_context("cuMemAlloc")) return r;
    if (bytes == 0) return report(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc", "0 bytes");
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t padded = (bytes + 15) / 16 * 16;
    size_t length = page + (padded + page - 1) / page * page + page;  // canary page, buffer, guard page
    std::lock_guard<std::mutex> hold(memory_lock);
    if (allocated + bytes > total_memory) return report(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc", std::to_string(bytes) + " bytes");
    void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return report(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc", "mmap of " + std::to_string(length) + " bytes failed");
    mprotect((char*)base + length - page, page, PROT_NONE);
    char* p = (char*)base + length - page - padded;
    memset(base, canary, length - page);
    allocations[(uintptr_t)p] = mapping{base, length, bytes};
    allocated += bytes;
    *dptr = (CUdeviceptr)(uintptr_t)p;
    return CUDA_SUCCESS;
}

CUresult cuMemFree(CUdeviceptr dptr) {
    if (CUresult r = need_context("cuMemFree")) return r;
    drain_all();  // like cudaFree, it waits for the device
    std::lock_guard<std::mutex> hold(memory_lock);
    auto it = allocations.find((uintptr_t)dptr);
    if (it == allocations.end()) return report(CUDA_ERROR_INVALID_VALUE, "cuMemFree", "not an allocation's start");
    munmap(it->second.base, it->second.length);
    allocated -= it->second.bytes;
    allocations.erase(it);
    return CUDA_SUCCESS;
}

CUresult cuMemGetInfo(size_t* free_bytes, size_t* total) {
    std::lock_guard<std::mutex> hold(memory_lock);
    *free_bytes = total_memory - allocated;
    *total = total_memory;
    return CUDA_SUCCESS;
}

CUresult cuMemAllocHost(void** p, size_t bytes) {
    if (CUresult r = need_context("cuMemAllocHost")) return r;
    *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!*p) return report(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAllocHost", std::to_string(bytes) + " bytes");
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    pinned[reinterpret_cast<uintptr_t>(*p)] = bytes;
    return CUDA_SUCCESS;
}

CUresult cuMemFreeHost(void* p) {
    drain_all();
    {
        std::lock_guard<std::recursive_mutex> hold(stream_lock);
        pinned.erase(reinterpret_cast<uintptr_t>(p));
    }
    free(p);
    return CUDA_SUCCESS;
}

// The synchronous copies and sets run on the legacy default stream: they
// wait for the blocking streams (never for CU_STREAM_NON_BLOCKING ones)
// and return an error queued work left.
CUresult cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t bytes) {
    if (CUresult r = check_range("cuMemcpyHtoD", dst, bytes)) return r;
    drain_blocking();
    memcpy((void*)(uintptr_t)dst, src, bytes);
    return take_pending();
}

CUresult cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = check_range("cuMemcpyDtoH", src, bytes)) return r;
    drain_blocking();
    memcpy(dst, (const void*)(uintptr_t)src, bytes);
    return take_pending();
}

CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = check_copy("cuMemcpyDtoD", dst, src, bytes)) return r;
    drain_blocking();
    memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, bytes);
    return take_pending();
}

// The asynchronous copies follow CUDA's rules for host memory: to or from
// pinned memory (cuMemAllocHost) they run in stream order, reading or
// writing the host buffer when they run; a copy from pageable memory
// first waits for the stream and takes the data at once, and a copy to
// pageable memory returns when it is done.
CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t bytes, CUstream st) {
    if (CUresult r = check_range("cuMemcpyHtoDAsync", dst, bytes)) return r;
    if (lazy_streams() && !is_pinned(src, bytes)) {
        if (stream_state* s = stream_of(st)) drain(s);
        return enqueue(nullptr, [=] { memcpy((void*)(uintptr_t)dst, src, bytes); return CUDA_SUCCESS; });
    }
    return enqueue(st, [=] {
        memcpy((void*)(uintptr_t)dst, src, bytes);
        return CUDA_SUCCESS;
    });
}

CUresult cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t bytes, CUstream st) {
    if (CUresult r = check_range("cuMemcpyDtoHAsync", src, bytes)) return r;
    if (lazy_streams() && !is_pinned(dst, bytes)) {
        if (stream_state* s = stream_of(st)) drain(s);
        return enqueue(nullptr, [=] { memcpy(dst, (const void*)(uintptr_t)src, bytes); return CUDA_SUCCESS; });
    }
    return enqueue(st, [=] {
        memcpy(dst, (const void*)(uintptr_t)src, bytes);
        return CUDA_SUCCESS;
    });
}

CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream st) {
    if (CUresult r = check_copy("cuMemcpyDtoDAsync", dst, src, bytes)) return r;
    return enqueue(st, [=] {
        memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, bytes);
        return CUDA_SUCCESS;
    });
}

CUresult cuMemsetD8(CUdeviceptr dst, unsigned char v, size_t n) { return fill("cuMemsetD8", dst, v, n, nullptr); }
CUresult cuMemsetD16(CUdeviceptr dst, unsigned short v, size_t n) { return fill("cuMemsetD16", dst, v, n, nullptr); }
CUresult cuMemsetD32(CUdeviceptr dst, unsigned int v, size_t n) { return fill("cuMemsetD32", dst, v, n, nullptr); }
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream st) { return fill("cuMemsetD8Async", dst, v, n, st); }
CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n, CUstream st) { return fill("cuMemsetD16Async", dst, v, n, st); }
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, CUstream st) { return fill("cuMemsetD32Async", dst, v, n, st); }

// A stream is its queue (used in lazy mode only).
CUresult cuStreamCreate(CUstream* stream, unsigned int flags) {
    if (CUresult r = need_context("cuStreamCreate")) return r;
    stream_state* s = new stream_state;
    s->blocking = (flags & CU_STREAM_NON_BLOCKING) == 0;
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    s->lazy = mode() == streams_mode::lazy || (mode() == streams_mode::alternate && streams_created % 2 == 0);
    streams_created++;
    streams.push_back(s);
    *stream = reinterpret_cast<CUstream>(s);
    return CUDA_SUCCESS;
}

CUresult cuStreamCreateWithPriority(CUstream* stream, unsigned int flags, int) { return cuStreamCreate(stream, flags); }

// cuStreamDestroy lets the stream's work finish (CUDA returns at once and
// finishes it later).
CUresult cuStreamDestroy(CUstream stream) {
    stream_state* s = stream_of(stream);
    if (!s) return report(CUDA_ERROR_INVALID_HANDLE, "cuStreamDestroy", "not a stream cuStreamCreate made");
    drain(s);
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    for (auto it = streams.begin(); it != streams.end();) it = *it == s ? streams.erase(it) : it + 1;
    delete s;
    return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream stream) {
    if (stream_state* s = stream_of(stream)) drain(s);
    else drain_blocking();
    return take_pending();
}

// cuStreamQuery lets the stream's work finish, as time passing would.
CUresult cuStreamQuery(CUstream stream) { return cuStreamSynchronize(stream); }

// cuStreamWaitEvent makes stream's later work wait for the work queued
// before the event's last record (nothing, if it was never recorded).
CUresult cuStreamWaitEvent(CUstream stream, CUevent ev, unsigned int) {
    if (!ev) return report(CUDA_ERROR_INVALID_HANDLE, "cuStreamWaitEvent", "null event");
    event* e = reinterpret_cast<event*>(ev);
    if (!pending_record(e)) return CUDA_SUCCESS;
    stream_state* on = e->stream;
    uint64_t seq = e->seq;
    std::shared_ptr<record> last = e->last;
    return enqueue(stream, [=] {
        if (!last->ran) run_until(on, seq);
        return CUDA_SUCCESS;
    });
}

CUresult cuEventCreate(CUevent* ev, unsigned int flags) {
    if (CUresult r = need_context("cuEventCreate")) return r;
    event* e = new event;
    e->flags = flags;
    *ev = reinterpret_cast<CUevent>(e);
    return CUDA_SUCCESS;
}

// cuEventDestroy returns at once; a record still queued runs later, as
// in CUDA.
CUresult cuEventDestroy(CUevent ev) {
    if (!ev) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventDestroy", "null event");
    delete reinterpret_cast<event*>(ev);
    return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent ev, CUstream stream) {
    if (!ev) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventRecord", "null event");
    event* e = reinterpret_cast<event*>(ev);
    stream_state* s = stream_of(stream);
    std::shared_ptr<record> r = std::make_shared<record>();
    if (!lazy_streams() || !s) {  // the legacy stream, or work that runs when issued
        if (lazy_streams()) drain_blocking();
        r->ran = true;
        r->at = std::chrono::steady_clock::now();
        e->last = r;
        e->stream = nullptr;
        return CUDA_SUCCESS;
    }
    std::lock_guard<std::recursive_mutex> hold(stream_lock);
    e->last = r;
    e->stream = s;
    e->seq = s->queued + 1;
    return enqueue(stream, [r] {
        r->ran = true;
        r->at = std::chrono::steady_clock::now();
        return CUDA_SUCCESS;
    });
}

CUresult cuEventSynchronize(CUevent ev) {
    if (!ev) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventSynchronize", "null event");
    event* e = reinterpret_cast<event*>(ev);
    if (pending_record(e)) run_until(e->stream, e->seq);
    return take_pending();
}

// cuEventQuery lets the work before the event finish, as time passing
// would.
CUresult cuEventQuery(CUevent ev) {
    if (!ev) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventQuery", "null event");
    return cuEventSynchronize(ev);
}

CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) {
    event* a = reinterpret_cast<event*>(start);
    event* b = reinterpret_cast<event*>(end);
    if (!a || !b) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime", "null event");
    if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING)
        return report(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime", "an event was created with CU_EVENT_DISABLE_TIMING");
    if (pending_record(a) || pending_record(b)) return CUDA_ERROR_NOT_READY;
    if (!a->last || !b->last) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime", "an event was never recorded");
    *ms = std::chrono::duration<float, std::milli>(b->last->at - a->last->at).count();
    return CUDA_SUCCESS;
}

CUresult cuModuleLoadDataEx(CUmodule* mod, const void* image, unsigned int, CUjit_option*, void**) {
    if (CUresult r = need_context("cuModuleLoadDataEx")) return r;
    const char* ptx = static_cast<const char*>(image);
    if (!strstr(ptx, ".version") || !strstr(ptx, ".target"))
        return report(CUDA_ERROR_INVALID_PTX, "cuModuleLoadDataEx", "the image is not PTX text");
    *mod = reinterpret_cast<CUmodule>(new module{ptx_entries(ptx)});
    return CUDA_SUCCESS;
}

CUresult cuModuleLoadData(CUmodule* mod, const void* image) { return cuModuleLoadDataEx(mod, image, 0, nullptr, nullptr); }

CUresult cuModuleUnload(CUmodule mod) {
    delete reinterpret_cast<module*>(mod);
    return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* fn, CUmodule mod, const char* name) {
    if (CUresult r = need_context("cuModuleGetFunction")) return r;
    const module* m = reinterpret_cast<const module*>(mod);
    auto entry = m->entries.find(name);
    if (entry == m->entries.end()) return report(CUDA_ERROR_NOT_FOUND, "cuModuleGetFunction", std::string(name) + " is not in the module's PTX");
    auto k = kernels().find(name);
    if (k == kernels().end())
        return report(CUDA_ERROR_NOT_FOUND, "cuModuleGetFunction", std::string(name) + " is in the PTX but not in the emulator's build of the .cu files");
    if (k->second.params != entry->second)
        return report(CUDA_ERROR_INVALID_PTX, "cuModuleGetFunction",
                      std::string(name) + " takes " + std::to_string(k->second.params) + " parameters in the .cu source but " +
                          std::to_string(entry->second) + " in the PTX: the PTX is stale (make ptx)");
    *fn = reinterpret_cast<CUfunction>(new function{name, &k->second});
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
                        unsigned int bz, unsigned int shared_bytes, CUstream stream, void** params, void** extra) {
    if (!f) return report(CUDA_ERROR_INVALID_HANDLE, "cuLaunchKernel", "null function");
    const function* fn = reinterpret_cast<const function*>(f);
    std::string call = "cuLaunchKernel(" + fn->name + ")";
    char dims[160];
    snprintf(dims, sizeof dims, "grid (%u,%u,%u), block (%u,%u,%u)", gx, gy, gz, bx, by, bz);
    unsigned long long threads = (unsigned long long)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || gx > 0x7fffffffu || gy > 65535 || gz > 65535)
        return report(CUDA_ERROR_INVALID_VALUE, call.c_str(), std::string(dims) + ": grid outside 1..2³¹-1 × 1..65535 × 1..65535");
    if (threads == 0 || threads > 1024 || bx > 1024 || by > 1024 || bz > 64)
        return report(CUDA_ERROR_INVALID_VALUE, call.c_str(), std::string(dims) + ": more than 1024 threads, or a dimension out of range");
    if (shared_bytes != 0) return report(CUDA_ERROR_INVALID_VALUE, call.c_str(), "dynamic shared memory is not emulated");
    if (extra) return report(CUDA_ERROR_INVALID_VALUE, call.c_str(), "the extra parameter array is not emulated");
    if (fn->kernel->params > 0 && !params) return report(CUDA_ERROR_INVALID_VALUE, call.c_str(), "no parameters");
    if (CUresult r = need_context(call.c_str())) return r;
    // Every pointer the kernel gets must point into a live allocation (a
    // host pointer, a freed buffer, or arguments out of order are illegal
    // addresses on a GPU); the canaries around those are checked after.
    std::vector<uintptr_t> buffers;
    {
        std::lock_guard<std::mutex> hold(memory_lock);
        for (int i = 0; i < fn->kernel->params; i++) {
            if (!(fn->kernel->pointers >> i & 1)) continue;
            uintptr_t p = *static_cast<const uintptr_t*>(params[i]);
            if (p == 0) continue;
            auto it = allocation_of(p);
            if (it == allocations.end()) {
                char buf[160];
                snprintf(buf, sizeof buf, "parameter %d (0x%llx) is not inside a device allocation", i, (unsigned long long)p);
                return report(CUDA_ERROR_ILLEGAL_ADDRESS, call.c_str(), buf);
            }
            buffers.push_back(it->first);
        }
    }
    // The launch takes its parameters' values now, as CUDA does: the
    // caller may reuse the memory they are in once the call returns.
    std::vector<std::vector<unsigned char>> values(fn->kernel->params);
    for (int i = 0; i < fn->kernel->params; i++) {
        const unsigned char* v = static_cast<const unsigned char*>(params[i]);
        values[i].assign(v, v + fn->kernel->sizes[i]);
    }
    const kernel_entry* kernel = fn->kernel;
    std::string where(dims);
    return enqueue(stream, [=]() mutable {
        std::vector<void*> args(values.size());
        for (size_t i = 0; i < values.size(); i++) args[i] = values[i].data();
        std::string error = run_grid(*kernel, args.data(), dim3{gx, gy, gz}, dim3{bx, by, bz});
        if (!error.empty()) return report(CUDA_ERROR_LAUNCH_FAILED, call.c_str(), where + ": " + error);
        std::lock_guard<std::mutex> hold(memory_lock);
        for (uintptr_t start : buffers) {
            auto it = allocations.find(start);
            std::string clobber = it == allocations.end() ? "" : clobbered(start, it->second);
            if (!clobber.empty()) {
                reset_canaries(start, it->second);
                return report(CUDA_ERROR_LAUNCH_FAILED, call.c_str(),
                              where + ": wrote " + clobber + " the " + std::to_string(it->second.bytes) + "-byte buffer it was given");
            }
        }
        return CUDA_SUCCESS;
    });
}

// iterbin_emulator_drain runs the work queued on stream (lazy mode): the
// test doubles of cuBLAS and cuDNN call it before they compute, on their
// handle's stream, so their work follows what was queued before it.
__attribute__((visibility("default"))) void iterbin_emulator_drain(CUstream stream) {
    if (stream_state* s = stream_of(stream)) drain(s);
    else drain_blocking();
}

CUresult cuGetErrorString(CUresult, const char** s) {
    *s = "error reported by the iterbin CUDA emulator (see its message on stderr)";
    return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult, const char** s) {
    *s = "CUDA_ERROR";
    return CUDA_SUCCESS;
}

}  // extern "C"
