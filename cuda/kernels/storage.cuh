// Activations stored as float32, bf16 or fp16 (Options.Layout nhwc-bf16
// and nhwc-fp16, layout.go). Kernels over activations are templates on
// their storage type T and compute in float32 either way: load widens
// (exactly), store rounds to nearest even (to ±Inf beyond fp16's range).
// STORAGE_KERNELS instantiates such a template as three kernels,
// name_f32, name_bf16 and name_f16, whose parameter lists name the
// storage type T. The operand conversions of precision bf16 and fp16
// (convert.cu, conv.cu) use load and store too.

#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

template <class I> __device__ __forceinline__ float load(const float* p, I i) { return p[i]; }
template <class I> __device__ __forceinline__ float load(const __nv_bfloat16* p, I i) { return __bfloat162float(p[i]); }
template <class I> __device__ __forceinline__ void store(float* p, I i, float v) { p[i] = v; }
template <class I> __device__ __forceinline__ void store(__nv_bfloat16* p, I i, float v) { p[i] = __float2bfloat16_rn(v); }
template <class I> __device__ __forceinline__ float load(const __half* p, I i) { return __half2float(p[i]); }
template <class I> __device__ __forceinline__ void store(__half* p, I i, float v) { p[i] = __float2half_rn(v); }

#define STORAGE_KERNELS(name, params, args)                                                     \
    namespace storage_f32 {                                                                     \
    typedef float T;                                                                            \
    extern "C" __global__ void name##_f32 params { name<T> args; }                              \
    }                                                                                           \
    namespace storage_bf16 {                                                                    \
    typedef __nv_bfloat16 T;                                                                    \
    extern "C" __global__ void name##_bf16 params { name<T> args; }                             \
    }                                                                                           \
    namespace storage_f16 {                                                                     \
    typedef __half T;                                                                           \
    extern "C" __global__ void name##_f16 params { name<T> args; }                              \
    }

// Pack<T, V> is V consecutive values of storage type T, read and written
// as one access; VecWidth<T> is the V that makes that access 16 bytes
// (4 float32 or 8 16-bit values). Passes over many elements take them a
// pack at a time: a quarter or an eighth of the loads and stores one
// value each would take, which a memory-bound pass needs to approach the
// device's bandwidth. The pointers must be aligned to the pack (buffers
// from cuMemAlloc are, to 256 bytes).
template <class T, int V> struct alignas(sizeof(T) * V) Pack {
    T v[V];
};
template <class T> struct VecWidth {
    enum { value = 16 / sizeof(T) };
};

// STORAGE_VEC_KERNELS instantiates a template on T and V as
// STORAGE_KERNELS does (V = 1: name_f32, name_bf16, name_f16) and a pack
// at a time (V = VecWidth<T>: name_vec_f32, name_vec_bf16, name_vec_f16).
#define STORAGE_VEC_KERNELS(name, params, args)                                                 \
    namespace storage_f32 {                                                                     \
    typedef float T;                                                                            \
    extern "C" __global__ void name##_f32 params { name<T, 1> args; }                           \
    extern "C" __global__ void name##_vec_f32 params { name<T, VecWidth<T>::value> args; }      \
    }                                                                                           \
    namespace storage_bf16 {                                                                    \
    typedef __nv_bfloat16 T;                                                                    \
    extern "C" __global__ void name##_bf16 params { name<T, 1> args; }                          \
    extern "C" __global__ void name##_vec_bf16 params { name<T, VecWidth<T>::value> args; }     \
    }                                                                                           \
    namespace storage_f16 {                                                                     \
    typedef __half T;                                                                           \
    extern "C" __global__ void name##_f16 params { name<T, 1> args; }                           \
    extern "C" __global__ void name##_vec_f16 params { name<T, VecWidth<T>::value> args; }      \
    }
