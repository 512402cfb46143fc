#!/usr/bin/env bash
# Two trainings on one GPU at once, e.g. the FSR and plain twins of one recipe: each runs as training/gpu_run.sh runs
# a config (the same MINUTES, KEY=VALUE pairs and PLAN, AA_*, EVAL_ATTACKS, DATA_DIR settings), in its own process
# group and run folder, under CUDA MPS where the machine has it and its two processes really are MPS clients (the
# kernels then share the GPU instead of taking turns; training/mps.sh says what it found), else as two plain
# processes. Each run's lines are printed prefixed with [<config name>], and each run's exit status at its end.
#
#   training/gpu_pair.sh CONFIG_A CONFIG_B MINUTES [KEY=VALUE ...]
#   PLAN=1 training/gpu_pair.sh CONFIG_A CONFIG_B MINUTES                  a fixed plan of each config, over calls
#
# What comes back fits one call's limits (at most 8 files of at most 16 MiB), finished or not: both runs' folders
# ($OUT/<config name>/: the weight shards and run.tar, as gpu_run.sh leaves them) in one tar split into pieces of
# 16 MiB, $OUT/pair.tar.00, .01, ... (a pair of full-width ResNet-18s makes 6, of VGG16s 8). On the receiving side:
# `cat pair.tar.* | tar -x`, then in each <config name>/ `tar -xf run.tar` and `python hub/merge_shards.py .`.
# A stop (SIGTERM at a call's time limit, SIGINT) ends both trainings and every process they started, waits for
# them and their logs, quits MPS and still packs what the runs left. The run folders are $RUN_BASE/fsr-gpu-run-<config
# name> (default /tmp), with PLAN=1 $RUN_BASE/gpu-run-<config name> (default runs).
set -euo pipefail
if [ $# -lt 3 ]; then sed -n '2,18p' "$0"; exit 2; fi
a=$1 b=$2 minutes=$3
shift 3
here=$(dirname "$0")
out=${OUT:-runs/gpu-out}
source "$here/mps.sh"
PIECE=16M MAX_PIECES=8

pids=() names=()
stop_runs() {  # every process of both trainings' groups, then wait until the groups are empty (logs included)
  local pid
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    while kill -0 -- "-$pid" 2>/dev/null; do sleep 0.2; done
  done
  pids=()
}
pack() {  # both run folders as one tar in pieces of at most $PIECE
  local present=() name pieces
  for name in "${names[@]}"; do [ -d "$out/$name" ] && present+=("$name"); done
  [ ${#present[@]} -gt 0 ] || return 0
  rm -f "$out"/pair.tar.*
  tar -C "$out" -cf - "${present[@]}" | split -b "$PIECE" -d -a 2 - "$out/pair.tar."
  (cd "$out" && rm -rf "${present[@]}")
  pieces=$(find "$out" -maxdepth 1 -name 'pair.tar.*' | wc -l)
  echo "what comes back: $pieces piece(s) of at most $PIECE in $out (cat pair.tar.* | tar -x)"
  if [ "$pieces" -gt "$MAX_PIECES" ]; then
    echo "error: $pieces pieces are more than the $MAX_PIECES files a call brings back: train these twins one per call"
    return 1
  fi
}
on_signal() {  # SIG$1, whose exit status is $2
  trap - TERM INT
  echo "stopped by SIG$1: ending both trainings"
  stop_runs
  exit "$2"
}
finish() {
  local status=$?
  stop_runs
  mps_stop
  pack || status=1
  find "$out" -type f -exec ls -la {} +
  exit "$status"
}
trap 'on_signal TERM 143' TERM
trap 'on_signal INT 130' INT
trap finish EXIT

mps=""
mps_start && mps=on
set -m  # from here each background job is a process group of its own, which stop_runs ends whole
for config in "$a" "$b"; do
  name=$(basename "$config" .yaml)
  names+=("$name")
  run_dir=${RUN_BASE:-/tmp}/fsr-gpu-run-$name  # one folder each, as gpu_run.sh's; a plan's stays while warm
  [ -n "${PLAN:-}" ] && run_dir=${RUN_BASE:-runs}/gpu-run-$name
  mkdir -p "$out/$name"
  # sed ignores TERM, so that it writes the run's last lines when the training is stopped
  (OUT="$out/$name" RUN_DIR="$run_dir" WHEEL_DIR="/tmp/site-$name" "$here/gpu_run.sh" "$config" "$minutes" "$@" 2>&1 |
    (trap '' TERM INT; exec sed -u "s/^/[$name] /")) &
  pids+=($!)
done
set +m
[ -n "$mps" ] && { mps_clients 2 60 "${pids[@]}" || true; } &  # are both trainings MPS clients?
status=0
for i in 0 1; do
  code=0
  wait "${pids[$i]}" || code=$?
  echo "[${names[$i]}] exit $code"
  [ "$code" -eq 0 ] || status=$code
done
while kill -0 -- "-${pids[0]}" 2>/dev/null || kill -0 -- "-${pids[1]}" 2>/dev/null; do sleep 0.2; done  # the seds
pids=()
wait  # the MPS client check
exit "$status"
