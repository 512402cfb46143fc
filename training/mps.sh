# CUDA MPS for several processes on one GPU, sourced by training/gpu_pair.sh and benchmarks/gpu_pair_check.sh.
# `mps_start` starts the control daemon with private pipe and log folders (the processes started after it find it
# through the exported variables) and returns 1 where the machine has no MPS or it does not start; `mps_stop` quits
# it. Nothing else changes: no GPU setting (compute mode, clocks) is touched.
mps_start() {
  command -v nvidia-cuda-mps-control >/dev/null || return 1
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/fsr-mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/fsr-mps/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then
    return 0
  fi
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  return 1
}

mps_stop() {
  if [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ]; then
    echo quit | nvidia-cuda-mps-control || true
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
}
