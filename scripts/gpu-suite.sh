#!/usr/bin/env bash
# The whole GPU check in one call of the lent GPU machine (see ../shared/gpu and
# `make gpu-bench`, which puts this script, the binaries, the PyTorch anchor and
# real MNIST into .gpubundle):
#   1. every CUDA test (every op against the CPU backend, cuDNN against im2col,
#      bf16 against fp32, training losses against the CPU's), each test in its
#      own process with its own time limit, so a crash or hang in one test
#      cannot hide the others;
#   2. the quick start (MNIST, iterative forward order) on the GPU;
#   3. a profile of ResNet-20 (float and binary) and ResNet-18 steps (tf32,
#      bf16 and, where GPU_SUITE_PRECISIONS names it, fp16), each op timed
#      on the device, each ending with how every convolution runs (cuDNN's
#      algorithm and its time);
#   4. iterbin's training throughput on the GPU, one process per model and
#      precision (fp32, bf16, tf32), with the default layout (NCHW at fp32,
#      channels-last at tf32, and at bf16 and fp16 channels-last with the
#      activations stored in that 16-bit format) and, for the convolutional
#      models, the other one (--layout nhwc at fp32, nchw otherwise) and at
#      bf16 and fp16 channels-last with float32 activations (--layout
#      nhwc), and PyTorch's on the same card (torch_anchor.py), with the
#      ratio table last.
# Logs go to $OUT (at most 8 files come back): env.log, tests.log, mnist.log,
# profile.log, bench.log, bench-other-layout.log, anchor.log, summary.txt.
# Commit them under docs/gpu/.
#
#   run tool: command="bash .gpubundle/gpu-suite.sh", carry=[".gpubundle"]
#   GPU_SUITE_SECONDS: the script's own deadline (default 400); stages that
#   would start after it are skipped and say so. GPU_SUITE_PROFILE=0 skips
#   the profile, GPU_SUITE_OTHER_LAYOUT=0 the benchmarks in the other
#   layout (not those with float32 activations at bf16 and fp16);
#   GPU_SUITE_MODELS and GPU_SUITE_PRECISIONS (space-separated) narrow the
#   benchmarks, and GPU_SUITE_TESTS (test names, space-separated, or an
#   extended regular expression over whole names, e.g. 'TestA|TestB.*')
#   the tests, for a short call. GPU_SUITE_PRECISIONS may name fp16, which
#   the PyTorch anchor lacks (its autocast is bf16 only).
set -u
cd "$(dirname "$0")/.."
B=.gpubundle
O=${OUT:-/tmp/gpu-suite-out}
mkdir -p "$O"
start=$SECONDS
deadline=${GPU_SUITE_SECONDS:-400}
summary=$O/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
left() { echo $((deadline - (SECONDS - start))); }
# limit N: a time limit of at most N seconds that ends before the deadline.
limit() { local l; l=$(left); [ "$l" -gt "$1" ] && l=$1; echo "$l"; }

# The pip CUDA 13 / cuDNN 9 libraries, as run.sh finds them.
dirs=()
for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do
  [ -d "$d" ] && dirs+=("$d")
done
IFS=: ; export LD_LIBRARY_PATH="${dirs[*]-}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; unset IFS
PY=python3
[ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3

{
  echo "== $(date -u +%FT%TZ) $(hostname) $(uname -r) $(ldd --version 2>&1 | head -1)"
  nvidia-smi 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv 2>&1
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ls "${dirs[@]}" 2>&1 | grep -E 'cublas|cudnn\.so|:$'
  ldd $B/bin/iterbin 2>&1
  $PY -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name())' 2>&1
  nproc; free -g
} >"$O/env.log" 2>&1
note "card: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -1)"

# 1. CUDA tests, one process each.
wanted=${GPU_SUITE_TESTS:-.*}
wanted=${wanted// /|}
listed=$($B/bin/cuda.test -test.list . 2>>"$O/tests.log" | grep '^Test')
tests=$(echo "$listed" | grep -E "^(${wanted})\$")
if [ -z "$listed" ]; then note "tests: the test binary listed no tests (see tests.log)"
elif [ -z "$tests" ]; then note "tests: none matches GPU_SUITE_TESTS=${GPU_SUITE_TESTS-}"; fi
for t in $tests; do
  l=$(limit 150)
  if [ "$l" -lt 20 ]; then note "test $t: SKIPPED (deadline)"; continue; fi
  echo "=== $t (limit ${l}s)" >>"$O/tests.log"
  t0=$SECONDS
  (cd cuda && timeout -k 5 "$l" ../$B/bin/cuda.test -test.run "^$t\$" -test.v -test.count=1 -test.timeout "$((l - 2))s") >>"$O/tests.log" 2>&1
  rc=$?
  case $rc in 0) r=PASS ;; 124|137) r="TIMEOUT after ${l}s" ;; *) r="FAIL (exit $rc)" ;; esac
  note "test $t: $r in $((SECONDS - t0))s"
done

# 2. The quick start on the GPU with real MNIST.
l=$(limit 90)
if [ "$l" -ge 30 ]; then
  t0=$SECONDS
  timeout -k 5 "$l" $B/bin/iterbin run experiments/mnist/quick-forward.toml -set run.device=cuda \
      -set data.dir=$B/mnist -set run.out_dir=/tmp/runs >"$O/mnist.log" 2>&1
  rc=$?
  note "mnist quick start on cuda: exit $rc in $((SECONDS - t0))s; $(grep -iE 'headline|test accuracy' "$O/mnist.log" | tail -3 | tr '\n' ' ')"
else
  note "mnist quick start: SKIPPED (deadline)"
fi

# 3. Where a step's time goes (each op's time on the device, from CUDA events);
# GPU_SUITE_PROFILE=0 skips it. fp16 too where GPU_SUITE_PRECISIONS names it.
profiled="tf32 bf16"
case " ${GPU_SUITE_PRECISIONS:-} " in *" fp16 "*) profiled="tf32 bf16 fp16" ;; esac
for p in $profiled; do
  [ "${GPU_SUITE_PROFILE:-1}" = 0 ] && break
  l=$(limit 60)
  if [ "$l" -lt 15 ]; then note "profile $p: SKIPPED (deadline)"; continue; fi
  timeout -k 5 "$l" $B/bin/iterbin bench --profile --device cuda --precision $p --models resnet20 --modes float,binary \
      --steps 3 --warmup 2 >>"$O/profile.log" 2>&1 || note "profile $p resnet20: exit $?"
  l=$(limit 60)
  if [ "$l" -lt 15 ]; then note "profile $p resnet18: SKIPPED (deadline)"; continue; fi
  timeout -k 5 "$l" $B/bin/iterbin bench --profile --device cuda --precision $p --models resnet18 --modes float \
      --steps 3 --warmup 2 >>"$O/profile.log" 2>&1 || note "profile $p resnet18: exit $?"
done

# 4. Throughput: iterbin per model and precision, then PyTorch on the same card.
models=${GPU_SUITE_MODELS:-mlp300 vgg5 resnet20 resnet18}
for p in ${GPU_SUITE_PRECISIONS:-fp32 bf16 tf32}; do
  for m in $models; do
    l=$(limit 75)
    if [ "$l" -lt 15 ]; then note "bench $m $p: SKIPPED (deadline)"; continue; fi
    echo "=== $m $p (limit ${l}s)" >>"$O/bench.log"
    timeout -k 5 "$l" $B/bin/iterbin bench --device cuda --precision $p --models $m --steps 30 --warmup 5 >>"$O/bench.log" 2>&1
    rc=$?
    [ $rc = 0 ] || note "bench $m $p: exit $rc"
  done
  # The other layout, and at bf16 and fp16 channels-last with float32
  # activations (nhwc), which auto's 16-bit ones are compared with.
  others=nchw
  [ $p = fp32 ] && others=nhwc
  [ $p = bf16 ] || [ $p = fp16 ] && others="nhwc nchw"
  for other in $others; do
    for m in $models; do
      if [ "${GPU_SUITE_OTHER_LAYOUT:-1}" = 0 ]; then
        [ $p != bf16 ] && [ $p != fp16 ] && break
        [ $other != nhwc ] && break
      fi
      [ $m = mlp300 ] && continue
      l=$(limit 75)
      if [ "$l" -lt 15 ]; then note "bench $m $p $other: SKIPPED (deadline)"; continue; fi
      echo "=== $m $p $other (limit ${l}s)" >>"$O/bench-other-layout.log"
      timeout -k 5 "$l" $B/bin/iterbin bench --device cuda --precision $p --layout $other --models $m --steps 30 --warmup 5 >>"$O/bench-other-layout.log" 2>&1
      rc=$?
      [ $rc = 0 ] || note "bench $m $p $other: exit $rc"
    done
  done
  if [ $p = fp16 ]; then note "anchor fp16: none (the anchor's autocast is bf16 only)"; continue; fi
  l=$(limit 150)
  if [ "$l" -lt 30 ]; then note "anchor $p: SKIPPED (deadline)"; continue; fi
  timeout -k 5 "$l" $PY -u $B/torch_anchor.py --models "$(echo $models | tr ' ' ,)" --precisions $p \
      --steps 30 --warmup 5 >>"$O/anchor.log" 2>&1 || note "anchor $p: exit $?"
done

# The table: iterbin's img/s in the default layout (bench.log rows; at
# bf16 and fp16 that stores activations in 16 bits), beside them, from
# bench-other-layout.log, the other layout's (NHWC at fp32, NCHW at tf32,
# bf16 and fp16) and at bf16 and fp16 channels-last with float32
# activations (nhwc), and PyTorch's (anchor.log JSON), with the ratios of
# the default layout and of float32 activations to PyTorch.
rows() { awk '/^=== /{p=$3; l=$4} $1 ~ /^(mlp300|vgg5|resnet20|resnet18)$/ && ($2=="float"||$2=="binary") {print $1, $2, p, $4, (l ~ /^\(/ ? "default" : l)}' "$1" 2>/dev/null; }
ratio() { [ -n "$2" ] && [ "$1" != - ] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}' || echo -; }
{
  echo
  echo "model mode precision iterbin_img_s other_layout_img_s f32_activations_img_s pytorch_img_s ratio f32_activations_ratio"
  rows "$O/bench.log" |
  while read -r m mode p ours _; do
    pick() { rows "$O/bench-other-layout.log" | awk -v m="$m" -v mode="$mode" -v p="$p" -v l="$1" '$1==m && $2==mode && $3==p && $5==l {print $4}' | head -1; }
    other=nchw; f32=""
    case $p in fp32) other=nhwc ;; bf16|fp16) f32=$(pick nhwc) ;; esac
    other_ips=$(pick $other)
    theirs=$(grep -h "\"model\": \"$m\"" "$O/anchor.log" 2>/dev/null | grep "\"precision\": \"$p\"" | grep "\"mode\": \"$mode\"" |
             sed -n 's/.*"img_per_s": \([0-9.]*\).*/\1/p' | head -1)
    echo "$m $mode $p $ours ${other_ips:--} ${f32:--} ${theirs:--} $(ratio "$ours" "$theirs") $(ratio "${f32:--}" "$theirs")"
  done
} | awk '{printf "%-9s %-7s %-9s %14s %18s %21s %14s %6s %21s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}' | tee -a "$summary"
note "suite took $((SECONDS - start))s"
