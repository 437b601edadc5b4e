// How the test doubles of cuBLAS and cuDNN keep stream order when the
// emulated driver queues work lazily (ITERBIN_EMULATOR_STREAMS=lazy,
// driver.cpp): before a call computes, the work queued on its handle's
// stream runs. The call itself then runs at once, one valid order.

#pragma once

#include <dlfcn.h>

namespace emu {

// drain_stream runs the work the driver has queued on stream. The driver
// (libcuda.so.1) is loaded before these libraries, so its
// iterbin_emulator_drain is found at run time; without it, nothing is
// queued.
inline void drain_stream(void* stream) {
    using drain_fn = void (*)(void*);
    static const drain_fn drain = reinterpret_cast<drain_fn>(dlsym(RTLD_DEFAULT, "iterbin_emulator_drain"));
    if (drain) drain(stream);
}

}  // namespace emu
