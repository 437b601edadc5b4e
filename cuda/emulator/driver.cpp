// A CPU stand-in for the CUDA driver library (libcuda.so.1), so the CUDA
// backend and its tests run on a machine without a GPU: build.sh builds it
// with iterbin's kernels compiled for the host (emu.h, fiber.cpp), and
// LD_LIBRARY_PATH puts it before the real driver.
//
// It implements the driver calls gorgonia.org/cu and the backend make,
// declared by the toolkit's cuda.h. Device memory is host memory: a
// device pointer is the address. Every call runs to completion before it
// returns, which is one valid order of the work on the streams.
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
#include <map>
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

struct event {
    unsigned flags;
    bool recorded;
    std::chrono::steady_clock::time_point at;
};

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

CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }

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
    return *p ? CUDA_SUCCESS : report(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAllocHost", std::to_string(bytes) + " bytes");
}

CUresult cuMemFreeHost(void* p) {
    free(p);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t bytes) {
    if (CUresult r = check_range("cuMemcpyHtoD", dst, bytes)) return r;
    memcpy((void*)(uintptr_t)dst, src, bytes);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = check_range("cuMemcpyDtoH", src, bytes)) return r;
    memcpy(dst, (const void*)(uintptr_t)src, bytes);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = check_range("cuMemcpyDtoD", dst, bytes)) return r;
    if (CUresult r = check_range("cuMemcpyDtoD", src, bytes)) return r;
    if (dst != src && dst < src + bytes && src < dst + bytes)
        return report(CUDA_ERROR_INVALID_VALUE, "cuMemcpyDtoD", "the source and destination overlap (undefined in CUDA)");
    memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, bytes);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t bytes, CUstream) { return cuMemcpyHtoD(dst, src, bytes); }
CUresult cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t bytes, CUstream) { return cuMemcpyDtoH(dst, src, bytes); }
CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream) { return cuMemcpyDtoD(dst, src, bytes); }

CUresult cuMemsetD8(CUdeviceptr dst, unsigned char v, size_t n) {
    if (CUresult r = check_range("cuMemsetD8", dst, n)) return r;
    memset((void*)(uintptr_t)dst, v, n);
    return CUDA_SUCCESS;
}

CUresult cuMemsetD16(CUdeviceptr dst, unsigned short v, size_t n) {
    if (CUresult r = check_range("cuMemsetD16", dst, 2 * n)) return r;
    for (size_t i = 0; i < n; i++) ((unsigned short*)(uintptr_t)dst)[i] = v;
    return CUDA_SUCCESS;
}

CUresult cuMemsetD32(CUdeviceptr dst, unsigned int v, size_t n) {
    if (CUresult r = check_range("cuMemsetD32", dst, 4 * n)) return r;
    for (size_t i = 0; i < n; i++) ((unsigned int*)(uintptr_t)dst)[i] = v;
    return CUDA_SUCCESS;
}

CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream) { return cuMemsetD8(dst, v, n); }
CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n, CUstream) { return cuMemsetD16(dst, v, n); }
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, CUstream) { return cuMemsetD32(dst, v, n); }

// Streams are handles to nothing: work runs when it is issued.
CUresult cuStreamCreate(CUstream* stream, unsigned int) {
    if (CUresult r = need_context("cuStreamCreate")) return r;
    *stream = reinterpret_cast<CUstream>(new char);
    return CUDA_SUCCESS;
}

CUresult cuStreamCreateWithPriority(CUstream* stream, unsigned int flags, int) { return cuStreamCreate(stream, flags); }

CUresult cuStreamDestroy(CUstream stream) {
    delete reinterpret_cast<char*>(stream);
    return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
CUresult cuStreamQuery(CUstream) { return CUDA_SUCCESS; }
CUresult cuStreamWaitEvent(CUstream, CUevent ev, unsigned int) {
    if (!ev) return report(CUDA_ERROR_INVALID_HANDLE, "cuStreamWaitEvent", "null event");
    return CUDA_SUCCESS;
}

CUresult cuEventCreate(CUevent* ev, unsigned int flags) {
    if (CUresult r = need_context("cuEventCreate")) return r;
    *ev = reinterpret_cast<CUevent>(new event{flags, false, {}});
    return CUDA_SUCCESS;
}

CUresult cuEventDestroy(CUevent ev) {
    delete reinterpret_cast<event*>(ev);
    return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent ev, CUstream) {
    if (!ev) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventRecord", "null event");
    event* e = reinterpret_cast<event*>(ev);
    e->recorded = true;
    e->at = std::chrono::steady_clock::now();
    return CUDA_SUCCESS;
}

CUresult cuEventSynchronize(CUevent ev) {
    if (!ev) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventSynchronize", "null event");
    return CUDA_SUCCESS;
}

CUresult cuEventQuery(CUevent ev) {
    if (!ev) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventQuery", "null event");
    return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) {
    event* a = reinterpret_cast<event*>(start);
    event* b = reinterpret_cast<event*>(end);
    if (!a || !b) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime", "null event");
    if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING)
        return report(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime", "an event was created with CU_EVENT_DISABLE_TIMING");
    if (!a->recorded || !b->recorded) return report(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime", "an event was never recorded");
    *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
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
                        unsigned int bz, unsigned int shared_bytes, CUstream, void** params, void** extra) {
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
    std::string error = run_grid(*fn->kernel, params, dim3{gx, gy, gz}, dim3{bx, by, bz});
    if (!error.empty()) return report(CUDA_ERROR_LAUNCH_FAILED, call.c_str(), std::string(dims) + ": " + error);
    std::lock_guard<std::mutex> hold(memory_lock);
    for (uintptr_t start : buffers) {
        auto it = allocations.find(start);
        std::string where = it == allocations.end() ? "" : clobbered(start, it->second);
        if (!where.empty()) {
            reset_canaries(start, it->second);
            return report(CUDA_ERROR_LAUNCH_FAILED, call.c_str(),
                          std::string(dims) + ": wrote " + where + " the " + std::to_string(it->second.bytes) + "-byte buffer it was given");
        }
    }
    return CUDA_SUCCESS;
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
