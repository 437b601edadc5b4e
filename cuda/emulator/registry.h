// The emulated kernels by name: each kernels_<file>.cpp that build.sh
// writes includes one .cu file and registers every kernel its PTX defines
// (EMU_KERNEL), with a caller that unpacks cuLaunchKernel's parameter
// array into the kernel's own parameter types.

#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <utility>

#include "emu.h"

// The namespaces STORAGE_KERNELS (storage.cuh) puts kernels in, declared so
// a file without them can still name them.
namespace storage_f32 {}
namespace storage_bf16 {}
namespace storage_f16 {}

namespace emu {

struct kernel_entry {
    void* fn;
    void (*invoke)(void* fn, void** params);
    int params;
    uint64_t pointers;  // bit i: parameter i is a pointer (device memory)
    uint8_t sizes[64];  // each parameter's size in bytes
};

// kernels holds every registered kernel (defined in driver.cpp).
std::map<std::string, kernel_entry>& kernels();

struct kernel_registration {
    kernel_registration(const char* name, kernel_entry e) { kernels()[name] = e; }
};

template <class... A, std::size_t... I> void call_with(void (*f)(A...), void** params, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(params[I])...);
}

template <class... A> void invoke(void* fn, void** params) {
    call_with(reinterpret_cast<void (*)(A...)>(fn), params, std::index_sequence_for<A...>{});
}

template <class... A> kernel_entry entry_for(void (*f)(A...)) {
    static_assert(sizeof...(A) <= 64, "at most 64 kernel parameters");
    bool is_pointer[] = {std::is_pointer<A>::value..., false};
    uint64_t pointers = 0;
    for (std::size_t i = 0; i < sizeof...(A); i++) pointers |= uint64_t(is_pointer[i]) << i;
    kernel_entry e{reinterpret_cast<void*>(f), &invoke<A...>, (int)sizeof...(A), pointers, {}};
    std::size_t sizes[] = {sizeof(A)..., 0};
    for (std::size_t i = 0; i < sizeof...(A); i++) e.sizes[i] = (uint8_t)sizes[i];
    return e;
}

}  // namespace emu

#define EMU_KERNEL(name) static emu::kernel_registration emu_kernel_##name(#name, emu::entry_for(&name));
