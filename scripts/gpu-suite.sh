#!/usr/bin/env bash
# The whole GPU check in one call of the lent GPU machine (see ../shared/gpu and
# `make gpu-bench`, which puts this script, the binaries and the PyTorch anchor
# into .gpubundle): the CUDA tests (every op against the CPU backend, cuDNN
# against im2col, bf16 against fp32, training losses against the CPU's), then
# iterbin's training throughput on the GPU beside PyTorch's on the same card,
# at fp32, tf32 and bf16. run.sh tees each part to $OUT/NAME.log; commit those
# logs under docs/gpu/.
#
#   run tool: command="bash .gpubundle/gpu-suite.sh", carry=[".gpubundle"]
set -u
cd "$(dirname "$0")/.."
B=.gpubundle
bash $B/run.sh cuda.test -test.v -test.count=1
for precision in fp32 tf32 bf16; do
  bash $B/run.sh iterbin bench --device cuda --precision $precision --models mlp300,vgg5,resnet20,resnet18 \
      --steps 30 --warmup 5 --anchor "$B/torch_anchor.py"
  # run.sh names its log after the binary: keep each precision's.
  [ -n "${OUT:-}" ] && [ -f "$OUT/iterbin.log" ] && mv "$OUT/iterbin.log" "$OUT/iterbin-bench-$precision.log"
done
