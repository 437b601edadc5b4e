// The CUDA C++ that iterbin's kernels use (cuda/kernels/*.cu), for the
// host compiler: g++ compiles each .cu file with this header forced in
// (-include), and the emulated driver (driver.cpp) runs a launch block by
// block, each CUDA thread a fiber (fiber.cpp) on the launching OS thread.
//
// Threads of a block run one at a time, each until it finishes or waits:
// at __syncthreads for the whole block, at a shuffle for the lanes of its
// warp named in the mask. So shared memory is a thread_local static (one
// block runs at a time on an OS thread), atomics are plain read-modify-
// writes, and a barrier or shuffle that not every thread it names reaches
// is reported as an error of the launch instead of hanging.

#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "bf16.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __restrict__ __restrict

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
};

struct double2 {
    double x, y;
};

inline double2 make_double2(double x, double y) { return double2{x, y}; }

namespace emu {

// The state one CUDA thread sees; the fiber scheduler points current_thread
// at the running fiber's.
struct thread_state {
    uint3 thread_idx, block_idx;
    dim3 block_dim, grid_dim;
};

extern thread_local thread_state* current_thread;

// sync_block waits until every thread of the block has called it (one
// that exited first makes the launch fail).
void sync_block();

// exchange publishes this lane's value to the lanes of its warp named in
// mask, waits until each of them that has not exited has published its
// own at the same kind of shuffle (shuffle: kind, width and value size),
// and returns the value published by lane source.
uint64_t exchange(unsigned mask, uint64_t value, unsigned source, unsigned shuffle);

enum shuffle_kind : unsigned { shuffle_idx = 1, shuffle_down = 2, shuffle_xor = 3 };

inline unsigned shuffle_of(shuffle_kind kind, int width, unsigned size) { return (unsigned)kind << 16 | (unsigned)width << 8 | size; }

inline unsigned lane() {
    const thread_state* t = current_thread;
    unsigned linear = t->thread_idx.x + t->block_dim.x * (t->thread_idx.y + t->block_dim.y * t->thread_idx.z);
    return linear % 32;
}

template <class T> uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffled values are at most 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}

template <class T> T from_bits(uint64_t u) {
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}

// segment_start is the first lane of lane's segment of width lanes.
inline unsigned segment_start(unsigned lane, int width) { return lane / (unsigned)width * (unsigned)width; }

}  // namespace emu

#define threadIdx (emu::current_thread->thread_idx)
#define blockIdx (emu::current_thread->block_idx)
#define blockDim (emu::current_thread->block_dim)
#define gridDim (emu::current_thread->grid_dim)

inline void __syncthreads() { emu::sync_block(); }

// The shuffles, as the CUDA Programming Guide defines them for width a
// power of two up to 32: a source past the end of this lane's segment
// (down) or in a later segment (xor) gives this lane's own value; idx
// reads src_lane modulo width within the segment.
template <class T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    unsigned self = emu::lane();
    unsigned source = self % (unsigned)width + delta < (unsigned)width ? self + delta : self;
    return emu::from_bits<T>(emu::exchange(mask, emu::to_bits(v), source, emu::shuffle_of(emu::shuffle_down, width, sizeof(T))));
}

template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    unsigned self = emu::lane();
    unsigned partner = (self ^ (unsigned)lane_mask) & 31u;
    unsigned source = partner / (unsigned)width > self / (unsigned)width ? self : partner;
    return emu::from_bits<T>(emu::exchange(mask, emu::to_bits(v), source, emu::shuffle_of(emu::shuffle_xor, width, sizeof(T))));
}

template <class T> T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    unsigned self = emu::lane();
    unsigned source = emu::segment_start(self, width) + ((unsigned)src_lane & (unsigned)(width - 1));
    return emu::from_bits<T>(emu::exchange(mask, emu::to_bits(v), source, emu::shuffle_of(emu::shuffle_idx, width, sizeof(T))));
}

// CUDA's global min and max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }

// One block runs at a time and its threads never interleave inside an
// expression, so read-modify-write is atomic.
inline float atomicAdd(float* p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}

inline double atomicAdd(double* p, double v) {
    double old = *p;
    *p = old + v;
    return old;
}
