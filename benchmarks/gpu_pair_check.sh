#!/usr/bin/env bash
# The measurement a GPU loan runs first (about 2-3 minutes on an H200, most of it compilation): images per second of
# ResNet-18-FSR's PGD-10 adversarial-training step on the training fast path (batch 128, bf16, channels_last,
# compile reduce-overhead), (i) in one process, (ii) in two processes at once, (iii) in two under CUDA MPS where the
# machine has it, (iv) in one process whose compiled attack computes every parameter's gradient too (the path before
# input-only attack gradients); printed with the GPU's name as ratios to (i), and the time a pair of 30-epoch runs
# (training/gpu_pair.sh) would take at the best rate. Each process times SECONDS of steps after its warm-up, the
# processes of (ii) and (iii) at the same time. A figure counts only if every process of it ended well, and (iii)
# only if both processes were MPS clients (training/mps.sh's check); otherwise the line says what failed, and the
# script exits 1 after printing the rest.
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

# rate NAME [N]: N processes (default 1) at once; prints the sum of their images per second, or "failed: WHY"
rate() {
  local name=$1 parties=${2:-1} i code failed="" pids=() checker=""
  mkdir -p "$work/barrier-$name" "$work/$name"
  for i in $(seq "$parties"); do
    "$PYTHON" benchmarks/bench_at_step.py "${step_args[@]}" --seconds "$seconds" "${extra[@]}" \
      --barrier "$work/barrier-$name" --parties "$parties" >"$work/$name/$i" 2>&1 &
    pids+=($!)
  done
  if [ "$name" = mps ]; then
    mps_clients "$parties" 60 "${pids[@]}" >"$work/mps-clients" 2>&1 &
    checker=$!
  fi
  for i in "${!pids[@]}"; do
    code=0
    wait "${pids[$i]}" || code=$?
    if [ "$code" -ne 0 ]; then
      failed+="process $((i + 1)) of $parties exited with status $code ($(tail -n 1 "$work/$name/$((i + 1))")); "
    fi
  done
  cat "$work/$name"/* >&2
  if [ -n "$checker" ]; then
    wait "$checker" || failed+="not MPS: $(tail -n 1 "$work/mps-clients"); "
    cat "$work/mps-clients" >&2
  fi
  if [ -n "$failed" ]; then echo "failed: ${failed%; }"; return; fi
  sed -n 's/^at_step_images_per_s //p' "$work/$name"/* | awk '{sum += $1} END {print sum}'
}

"$PYTHON" -c 'import torch; print("GPU:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)")'
extra=()
one=$(rate one)
two=$(rate two 2)
mps="no MPS here"
if mps_start >&2; then
  mps=$(rate mps 2)
  mps_stop >&2
fi
extra=(--attack-grads all)
all_grads=$(rate all_grads)
"$PYTHON" - "$one" "$two" "$mps" "$all_grads" <<'PY'
import sys

figures = dict(zip(("one", "two", "mps", "all_grads"), sys.argv[1:]))
rates = {k: float(v) for k, v in figures.items() if v.replace(".", "", 1).isdigit()}
one = rates.get("one")


def line(label, key, against=""):
    if key not in rates:
        return f"{label}{figures[key]}"
    ratio = f"  {rates[key] / one:.2f}x (i)" if one and against else ""
    return f"{label}{rates[key]:9.1f} images/s{ratio}"


print(line("(i)   one process:                      ", "one"))
print(line("(ii)  two processes at once:            ", "two", "one"))
print(line("(iii) two under CUDA MPS:               ", "mps", "one"))
all_grads = line("(iv)  attack computing all gradients:   ", "all_grads")
if one and "all_grads" in rates:
    all_grads += f"  input-only gradients {one / rates['all_grads']:.2f}x"
print(all_grads)
measured = [rates[k] for k in ("one", "two", "mps") if k in rates]
if measured:
    best = max(measured)
    print(f"a pair of 30-epoch runs (49,000 images an epoch) at {best:.0f} images/s: {2 * 30 * 49_000 / best / 60:.1f} min of training")
if any(v.startswith("failed") for v in figures.values()):
    sys.exit(1)
PY
