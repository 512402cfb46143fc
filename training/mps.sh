# CUDA MPS for several processes on one GPU, sourced by training/gpu_pair.sh and benchmarks/gpu_pair_check.sh.
# `mps_start` stops a daemon that an earlier call left running (a call killed with SIGKILL runs no trap), then starts
# the control daemon with pipe and log folders of this call's own (the processes started after it find it through the
# exported variables); it returns 1 where the machine has no MPS or it does not start. `mps_clients N` says whether
# N processes really are MPS clients (a client that cannot connect runs without MPS, silently). `mps_stop` quits the
# daemon. Each says what it found in one line. No GPU setting (compute mode, clocks) is touched.
# this call's folders are $MPS_FOLDERS-XXXXXX (default /tmp/fsr-mps-XXXXXX); an earlier version used $MPS_FOLDERS itself
MPS_FOLDERS=${MPS_FOLDERS:-/tmp/fsr-mps}

mps_start() {
  if ! command -v nvidia-cuda-mps-control >/dev/null; then
    echo "CUDA MPS: not on this machine (no nvidia-cuda-mps-control)"
    return 1
  fi
  local stale
  for stale in "$MPS_FOLDERS"*/pipe; do
    [ -d "$stale" ] || continue
    if echo quit | CUDA_MPS_PIPE_DIRECTORY=$stale timeout 10 nvidia-cuda-mps-control >/dev/null 2>&1; then
      echo "CUDA MPS: stopped the daemon an earlier call left running (pipe folder $stale)"
    else
      echo "CUDA MPS: removed the folders of an earlier call (no daemon on $stale)"
    fi
    rm -rf "$(dirname "$stale")"
  done
  local base
  base=$(mktemp -d "$MPS_FOLDERS-XXXXXX")
  export CUDA_MPS_PIPE_DIRECTORY=$base/pipe CUDA_MPS_LOG_DIRECTORY=$base/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then
    echo "CUDA MPS: daemon started (pipes in $CUDA_MPS_PIPE_DIRECTORY)"
    return 0
  fi
  echo "CUDA MPS: the daemon did not start (see $CUDA_MPS_LOG_DIRECTORY): processes run without MPS"
  rm -rf "$base"
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  return 1
}

# mps_clients N [SECONDS [PID ...]]: wait up to SECONDS (default 120), or until the processes PID ... have all ended,
# for the MPS servers to list N clients; print the servers and clients found, and return 1 if fewer than N connected
# (the others run without MPS).
mps_clients() {
  local want=$1 seconds=${2:-120} servers="" clients="" server found=0 i
  shift 2 || shift $#
  for ((i = 0; i <= seconds; i++)); do
    servers=$(echo get_server_list | timeout 10 nvidia-cuda-mps-control 2>/dev/null || true)
    clients=""
    for server in $servers; do
      clients+=" $(echo "get_client_list $server" | timeout 10 nvidia-cuda-mps-control 2>/dev/null || true)"
    done
    found=$(wc -w <<<"$clients")
    [ "$found" -ge "$want" ] && break
    if [ $# -gt 0 ]; then  # stop once every watched process has ended
      local pid alive=""
      for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ -n "$alive" ] || break
    fi
    [ "$i" -lt "$seconds" ] && sleep 1
  done
  echo "CUDA MPS: server(s) [${servers//$'\n'/ }], client(s) [$(echo $clients)]"
  if [ "$found" -lt "$want" ]; then
    echo "CUDA MPS: $found of $want processes are MPS clients: the others run without MPS"
    return 1
  fi
}

mps_stop() {
  if [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ]; then
    echo quit | timeout 30 nvidia-cuda-mps-control || true
    echo "CUDA MPS: daemon stopped"
    rm -rf "$(dirname "$CUDA_MPS_PIPE_DIRECTORY")"
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
}
