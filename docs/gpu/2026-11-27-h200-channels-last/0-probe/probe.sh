set -u
cd "$(dirname "$0")/.."
O=${OUT:-/tmp/probe}; mkdir -p $O
PY=/opt/torch/.venv/bin/python3
dirs=(); for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do [ -d "$d" ] && dirs+=("$d"); done
IFS=: ; export LD_LIBRARY_PATH="${dirs[*]-}"; unset IFS
nvidia-smi -L > $O/probe.log
timeout 100 $PY -u .gpubundle/probe.py >> $O/probe.log 2>&1
for cl in "" "--no-channels-last"; do
  timeout 60 $PY -u .gpubundle/torch_anchor.py --models resnet18 --modes float --precisions fp32,tf32,bf16 --steps 15 --warmup 5 $cl >> $O/probe.log 2>&1
done
for p in tf32 bf16; do
  timeout 40 .gpubundle/bin/iterbin bench --profile --device cuda --precision $p --models resnet18 --modes float --steps 3 --warmup 2 >> $O/probe.log 2>&1
done
echo done >> $O/probe.log
