#!/usr/bin/env bash
# build.sh OUT: builds the CPU emulation of the GPU libraries into OUT —
# libcuda.so.1 (driver.cpp, fiber.cpp and every cuda/kernels/*.cu compiled
# by g++), libcublas.so.13 (cublas.cpp) and libcudnn.so.9 (cudnn.cpp) — so
# that, with OUT first on LD_LIBRARY_PATH, a binary built with -tags cuda
# runs its CUDA backend on the CPU. Needs g++ and the toolkit's cuda.h.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernels=$(cd "$here/../kernels" && pwd)
out=${1:?usage: build.sh OUT}
mkdir -p "$out/obj"
out=$(cd "$out" && pwd)
flags=(-O3 -std=c++17 -fPIC -Wall -Wextra -Werror -I"$here")

# One object per kernel file: the .cu with emu.h forced in front, then a
# registration of each kernel its committed PTX defines, so the emulator
# runs exactly the kernels the GPU gets.
compile_kernels() {
  local cu=$1 base src
  base=$(basename "${cu%.cu}")
  src=$out/obj/kernels_$base.cpp
  {
    echo "#include \"$cu\""
    echo '#include "registry.h"'
    echo 'using namespace storage_f32;'
    echo 'using namespace storage_bf16;'
    echo 'using namespace storage_f16;'
    sed -n 's/^\.visible \.entry \([A-Za-z0-9_]*\)(.*/EMU_KERNEL(\1)/p' "${cu%.cu}.ptx"
  } >"$src"
  g++ "${flags[@]}" -Wno-sign-compare -ftls-model=initial-exec -I"$here/include" -include "$here/emu.h" -c "$src" -o "${src%.cpp}.o"
}
pids=()
for cu in "$kernels"/*.cu; do compile_kernels "$cu" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
g++ "${flags[@]}" -ftls-model=initial-exec -c "$here/fiber.cpp" -o "$out/obj/fiber.o"
g++ "${flags[@]}" -c "$here/driver.cpp" -o "$out/obj/driver.o"
g++ -shared -Wl,-soname,libcuda.so.1 -Wl,-z,defs -o "$out/libcuda.so.1" "$out"/obj/*.o
g++ "${flags[@]}" -Wno-sign-compare -o "$out/obj/selftest" "$here/selftest.cpp" -L"$out" -l:libcuda.so.1 -Wl,-rpath,"$out"
"$out/obj/selftest"
ITERBIN_EMULATOR_STREAMS=lazy "$out/obj/selftest" lazy
g++ "${flags[@]}" -shared -Wl,-soname,libcublas.so.13 -Wl,-z,defs -o "$out/libcublas.so.13" "$here/cublas.cpp"
g++ "${flags[@]}" -shared -Wl,-soname,libcudnn.so.9 -Wl,-z,defs -o "$out/libcudnn.so.9" "$here/cudnn.cpp"
echo "CUDA emulator built in $out"
