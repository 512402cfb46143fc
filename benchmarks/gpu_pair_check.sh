#!/usr/bin/env bash
# The measurement a GPU loan runs first (about 2-3 minutes on an H200, most of it compilation): images per second of
# ResNet-18-FSR's PGD-10 adversarial-training step on the training fast path (batch 128, bf16, channels_last,
# compile reduce-overhead), (i) in one process, (ii) in two processes at once, (iii) in two under CUDA MPS where the
# machine has it, (iv) in one process whose compiled attack computes every parameter's gradient too (the path before
# input-only attack gradients); printed with the GPU's name as ratios to (i), and the time a pair of 30-epoch runs
# (training/gpu_pair.sh) would take at the best rate. Each process times SECONDS of steps after its warm-up, the
# processes of (ii) and (iii) at the same time.
#
#   benchmarks/gpu_pair_check.sh [SECONDS]                                          (default 15)
#   STEP_ARGS="--compile none --widths 8 16 32 64 --batch 16" benchmarks/gpu_pair_check.sh 2   # a dry run on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
PYTHON=${PYTHON:-python3}
read -ra step_args <<<"${STEP_ARGS:---batch 128 --precision bf16 --channels-last --compile reduce-overhead}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout, installed or not
source training/mps.sh
work=$(mktemp -d)
trap 'mps_stop; rm -rf "$work"' EXIT

# rate NAME [N]: N processes (default 1) at once; prints the sum of their images per second
rate() {
  local name=$1 parties=${2:-1} i
  mkdir -p "$work/barrier-$name" "$work/$name"
  for i in $(seq "$parties"); do
    "$PYTHON" benchmarks/bench_at_step.py "${step_args[@]}" --seconds "$seconds" "${extra[@]}" \
      --barrier "$work/barrier-$name" --parties "$parties" >"$work/$name/$i" 2>&1 &
  done
  wait
  cat "$work/$name"/* >&2
  sed -n 's/^at_step_images_per_s //p' "$work/$name"/* | awk '{sum += $1} END {print sum}'
}

"$PYTHON" -c 'import torch; print("GPU:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)")'
extra=()
one=$(rate one)
two=$(rate two 2)
mps=""
if mps_start; then
  mps=$(rate mps 2)
  mps_stop
fi
extra=(--attack-grads all)
all_grads=$(rate all_grads)
"$PYTHON" - "$one" "$two" "${mps:-0}" "$all_grads" <<'PY'
import sys
one, two, mps, all_grads = map(float, sys.argv[1:])
print(f"(i)   one process:                      {one:9.1f} images/s")
print(f"(ii)  two processes at once:            {two:9.1f} images/s  {two / one:.2f}x (i)")
print(f"(iii) two under CUDA MPS:               " + (f"{mps:9.1f} images/s  {mps / one:.2f}x (i)" if mps else "no MPS here"))
print(f"(iv)  attack computing all gradients:   {all_grads:9.1f} images/s  input-only gradients {one / all_grads:.2f}x")
best = max(one, two, mps)
print(f"a pair of 30-epoch runs (49,000 images an epoch) at {best:.0f} images/s: {2 * 30 * 49_000 / best / 60:.1f} min of training")
PY
