// The one-line diagnostic the test doubles print when they return an
// error status: which library, which call, what is wrong.

#pragma once

#include <cstdarg>
#include <cstdio>

namespace emu {

inline int report_status(const char* library, int status, const char* fn, const char* fmt, va_list ap) {
    char msg[512];
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    std::fprintf(stderr, "%s emulator: %s: %s (status %d)\n", library, fn, msg, status);
    return status;
}

}  // namespace emu
