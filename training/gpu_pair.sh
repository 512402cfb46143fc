#!/usr/bin/env bash
# Two trainings on one GPU at once, e.g. the FSR and plain twins of one recipe: each runs as training/gpu_run.sh runs
# a config (the same MINUTES, KEY=VALUE pairs and PLAN, AA_*, EVAL_ATTACKS, DATA_DIR settings), in its own process and
# run folder, under CUDA MPS where the machine has it (the two processes' kernels then share the GPU instead of
# taking turns; training/mps.sh), else as two plain processes. What comes back stays within the limits of one call
# (at most 8 files of at most 16 MiB): each run's weight shards in $OUT/<config name>/, and $OUT/run.tar holding both
# runs' run.tar as <config name>/run.tar. On the receiving side: `tar -xf run.tar`, then in each <config name>/
# `tar -xf run.tar` and `python hub/merge_shards.py .` as for gpu_run.sh.
#
#   training/gpu_pair.sh CONFIG_A CONFIG_B MINUTES [KEY=VALUE ...]
#   PLAN=1 training/gpu_pair.sh CONFIG_A CONFIG_B MINUTES                  a fixed plan of each config, over calls
#
# The run folders are $RUN_BASE/fsr-gpu-run-<config name> (default /tmp), with PLAN=1 $RUN_BASE/gpu-run-<config name>
# (default runs).
set -euo pipefail
if [ $# -lt 3 ]; then sed -n '2,15p' "$0"; exit 2; fi
a=$1 b=$2 minutes=$3
shift 3
here=$(dirname "$0")
out=${OUT:-runs/gpu-out}
source "$here/mps.sh"
trap mps_stop EXIT
if mps_start; then echo "CUDA MPS: on (pipes in $CUDA_MPS_PIPE_DIRECTORY)"; else echo "CUDA MPS: not here, two plain processes"; fi
pids=() names=()
for config in "$a" "$b"; do
  name=$(basename "$config" .yaml)
  names+=("$name")
  run_dir=${RUN_BASE:-/tmp}/fsr-gpu-run-$name  # one folder each, as gpu_run.sh's; a plan's stays while warm
  [ -n "${PLAN:-}" ] && run_dir=${RUN_BASE:-runs}/gpu-run-$name
  mkdir -p "$out/$name"
  OUT="$out/$name" RUN_DIR="$run_dir" WHEEL_DIR="/tmp/site-$name" "$here/gpu_run.sh" "$config" "$minutes" "$@" \
    > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
tars=()
for name in "${names[@]}"; do
  [ -f "$out/$name/run.tar" ] && tars+=("$name/run.tar")
done
if [ ${#tars[@]} -gt 0 ]; then
  tar -C "$out" -cf "$out/run.tar" "${tars[@]}"
  (cd "$out" && rm -f "${tars[@]}")
fi
find "$out" -type f -exec ls -la {} +
exit "$status"
