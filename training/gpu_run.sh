#!/usr/bin/env bash
# The GPU machine's job: train a config for a time budget on the fast path (data and augmentation on the GPU,
# bf16 autocast, channels_last, batch 512 with the learning rate scaled), evaluate the best weights on the test
# set (clean and PGD-20), run AutoAttack on its first images, and leave in $OUT what comes back (at most 8 files
# of at most 16 MiB): the weights as safetensors shards with their index, config.json, metrics.json (results, the
# AutoAttack report under "evaluation" and the full training config) and train.log.
#
#   training/gpu_run.sh CONFIG MINUTES [KEY=VALUE ...]     e.g. training/gpu_run.sh \
#       training/configs/resnet18_fsr_at_cifar10.yaml 8 test_size=10000
#
# Data: CIFAR-10 pieces in $DATA_DIR (default .gpu-data/cifar10/: train-0.npz, train-1.npz, ..., test.npz), carried
# there in earlier calls (../shared/tools/gpu-data-chunks prints them). AutoAttack (standard) runs on the first
# $AA_IMAGES test images (default 1000; 0 skips it) and is stopped after $AA_SECONDS seconds (default 150): the
# weights and test figures are in $OUT before it starts, and the log says when it was stopped.
# Library versions newer than the machine's can travel as wheels in .whl/ (see the device tool's README); they are
# installed first when present. KEY=VALUE pairs override the fast-path settings below, e.g. batch_size=256 or, to
# try the script on a CPU, precision=fp32 channels_last=false batch_size=50 (with DATA_DIR=../shared/data/cifar10).
set -euo pipefail
if [ $# -lt 2 ]; then sed -n '2,17p' "$0"; exit 2; fi
config=$1 minutes=$2
shift 2
out=${OUT:-runs/gpu-out}
run=${RUN_DIR:-/tmp/fsr-gpu-run}
data=${DATA_DIR:-.gpu-data/cifar10} aa_images=${AA_IMAGES:-1000} aa_seconds=${AA_SECONDS:-150}
PYTHON=${PYTHON:-python3}  # the GPU machine's python3 holds PyTorch
mkdir -p "$out"
rm -rf "$run"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")'
"$PYTHON" training/train.py --config "$config" --set data_dir="$data" time_budget_min="$minutes" \
  shard_mb=16 output_dir="$run" precision=bf16 channels_last=true batch_size=512 "$@" 2>&1 \
  | tr '\r' '\n' | grep -v 'it/s\]$\|s/it\]$' | tee "$out/train.log"
cp "$run"/model/* "$out"/
if [ "$aa_images" -gt 0 ]; then
  status=0
  timeout "$aa_seconds" "$PYTHON" -m fsr_models.evaluate "$run/model" --data-dir "$data" --n "$aa_images" \
    --attacks natural pgd20 autoattack --batch-size 1000 --out "$run/eval" >>"$out/train.log" 2>&1 || status=$?
  if [ "$status" -eq 0 ]; then
    "$PYTHON" - "$run/eval/report.json" "$out/metrics.json" <<'EOF'
import json, sys
report, metrics = (json.load(open(path)) for path in sys.argv[1:])
json.dump({**metrics, "evaluation": report}, open(sys.argv[2], "w"), indent=2)
EOF
    cat "$run/eval/report.md"
  else
    echo "AutoAttack evaluation stopped (exit $status, limit $aa_seconds s): see the end of train.log" \
      | tee -a "$out/train.log"
  fi
fi
ls -la "$out"
