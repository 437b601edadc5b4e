// The emulated launch (fiber.cpp).

#pragma once

#include <string>

#include "registry.h"

namespace emu {

// run_grid runs kernel over grid × block with cuLaunchKernel's parameter
// array, and returns why it failed, or "" if it ran to completion.
std::string run_grid(const kernel_entry& kernel, void** params, dim3 grid, dim3 block);

}  // namespace emu
