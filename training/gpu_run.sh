#!/usr/bin/env bash
# The GPU machine's job: train a config on the fast path (data and augmentation on the GPU, bf16 autocast,
# channels_last, compiled steps with CUDA graphs, batch 512 with the learning rate scaled unless the config names its
# batch size), evaluate the best weights on the test set (clean and PGD-20), run AutoAttack and the robustness curve
# on its first images, and leave in $OUT
# what comes back (at most 8 files of at most 16 MiB): the weights as safetensors shards, and run.tar with every
# other file (config.json, the shard index, preprocessor_config.json, fsr_heads.safetensors, metrics.json,
# robustness.json, robustness_curve.png, train.log). On the receiving side, `tar -xf run.tar` beside the shards
# restores the folder and `python hub/merge_shards.py FOLDER` joins the shards into one model.safetensors.
#
#   training/gpu_run.sh CONFIG MINUTES [KEY=VALUE ...]            one call: the epochs are fitted to MINUTES
#   PLAN=1 training/gpu_run.sh CONFIG MINUTES [KEY=VALUE ...]     a fixed plan (the config's epochs) over calls
#
# With PLAN=1 each call trains for MINUTES and checkpoints in $RUN_DIR (default runs/gpu-run-<config name>: ignored, kept
# on the machine while it stays warm); the same command again resumes it (KEY=VALUE pairs then only repeat the first
# call's). A call that does not finish the plan leaves the best weights so far and the log in $OUT; the call that
# finishes it evaluates. The first call prints how many epochs a call fits at the measured speed.
# Data: CIFAR-10 pieces in $DATA_DIR (default .gpu-data/cifar10/: train-0.npz, train-1.npz, ..., test.npz) carried
# there in earlier calls. AutoAttack (standard) and the curve run on the first $AA_IMAGES test images (default 1000;
# 0 skips them) and are stopped after $AA_SECONDS seconds (default 150); $EVAL_ATTACKS names the attacks of that
# evaluation (default: natural pgd20 autoattack). $BENCH, when set, holds the arguments of a
# run of benchmarks/bench_models.py first (its table goes into run.tar as bench.txt). Library versions newer than the
# machine's can travel as wheels in .whl/; they are installed first when present (into $WHEEL_DIR, default
# /tmp/site). training/gpu_pair.sh runs two configs at once. KEY=VALUE pairs override the
# fast-path settings below, e.g. batch_size=256 or, to try the script on a CPU, precision=fp32 channels_last=false
# compile=none batch_size=50 (with DATA_DIR=<a CIFAR-10 folder>).
set -euo pipefail
if [ $# -lt 2 ]; then sed -n '2,26p' "$0"; exit 2; fi
config=$1 minutes=$2
shift 2
out=${OUT:-runs/gpu-out}
data=${DATA_DIR:-.gpu-data/cifar10} aa_images=${AA_IMAGES:-1000} aa_seconds=${AA_SECONDS:-150}
read -ra eval_attacks <<<"${EVAL_ATTACKS:-natural pgd20 autoattack}"
PYTHON=${PYTHON:-python3}  # the GPU machine's python3 holds PyTorch
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  site=${WHEEL_DIR:-/tmp/site}  # training/gpu_pair.sh gives each of its runs its own
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")'
extras=()
if [ -n "${BENCH:-}" ]; then
  # shellcheck disable=SC2086  # $BENCH is a list of arguments
  "$PYTHON" benchmarks/bench_models.py $BENCH | tee "$out/bench.txt"
  extras+=(bench.txt)
fi

fast=(data_dir="$data" shard_mb=16 precision=bf16 channels_last=true compile=reduce-overhead)
grep -q '^batch_size:' "$config" || fast+=(batch_size=512)  # the fast path's batch, unless the recipe names its own
if [ -n "${PLAN:-}" ]; then
  run=${RUN_DIR:-runs/gpu-run-$(basename "$config" .yaml)}  # one folder per config: a twin never resumes the other
  if [ -d "$run/checkpoint" ] || [ -d "$run/checkpoint.old" ]; then
    args=(--resume "$run" --set data_dir="$data" stop_after_min="$minutes")
  else
    rm -rf "$run"
    args=(--config "$config" --set "${fast[@]}" stop_after_min="$minutes" output_dir="$run" "$@")
  fi
else
  run=${RUN_DIR:-/tmp/fsr-gpu-run}
  rm -rf "$run"
  args=(--config "$config" --set "${fast[@]}" time_budget_min="$minutes" output_dir="$run" "$@")
fi
mkdir -p "$run"
"$PYTHON" training/train.py "${args[@]}" 2>&1 | tr '\r' '\n' | grep -v 'it/s\]$\|s/it\]$' | tee -a "$run/train.log"

if [ -f "$run/model/metrics.json" ]; then  # the plan is finished: the evaluated model comes back
  folder="$run/model"
  if [ "$aa_images" -gt 0 ]; then
    status=0
    timeout "$aa_seconds" "$PYTHON" -m fsr_models.evaluate "$folder" --data-dir "$data" --n "$aa_images" \
      --attacks "${eval_attacks[@]}" --curve --batch-size 1000 --out "$run/eval" --overwrite >>"$run/train.log" 2>&1 \
      || status=$?
    if [ "$status" -eq 0 ]; then
      cp "$run/eval/report.json" "$folder/robustness.json"
      cp "$run/eval/robustness_curve.png" "$folder/robustness_curve.png"
      cat "$run/eval/report.md"
    else
      echo "AutoAttack evaluation stopped (exit $status, limit $aa_seconds s): see the end of train.log" \
        | tee -a "$run/train.log"
    fi
  fi
else  # a call of a plan: the best weights so far come back, in case the machine is gone before the next call
  folder="$run/best"
fi
cp "$folder"/*.safetensors "$out"/
rm -f "$out/fsr_heads.safetensors"  # it travels in run.tar with the other small files
cp "$run/train.log" "$out/train.log"
small=()
for f in "$folder"/*; do
  case "$(basename "$f")" in *.safetensors) [ "$(basename "$f")" = fsr_heads.safetensors ] || continue ;; esac
  cp "$f" "$out/" && small+=("$(basename "$f")")
done
tar -C "$out" -cf "$out/run.tar" "${small[@]}" train.log "${extras[@]}"
(cd "$out" && rm -f "${small[@]}" train.log "${extras[@]}")
ls -la "$out"
