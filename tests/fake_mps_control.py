"""A stand-in for nvidia-cuda-mps-control on a machine without a GPU, for the tests of training/mps.sh and the scripts
that source it. Like the real one: `-d` starts a daemon (here a sleeping process, its PID kept in the pipe folder
$CUDA_MPS_PIPE_DIRECTORY) and fails if one already runs there; commands come on standard input: `quit` stops the
daemon (and fails where none runs), `get_server_list` prints the server's PID, `get_client_list PID` the PIDs of its
clients. A client is a Python process of the scripts (train.py, bench_at_step.py) started with this pipe folder in
its environment, unless $FAKE_MPS_CLIENTS is `none` (clients that cannot connect). Every call is appended to
$FAKE_MPS_RECORD as `<command> <pipe folder>`."""

import os
import signal
import subprocess
import sys
from pathlib import Path

CLIENT_SCRIPTS = ("train.py", "bench_at_step.py")


def daemon_pid(pipe: Path) -> int | None:
    try:
        pid = int((pipe / "daemon.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def clients(pipe: Path) -> list[int]:
    if os.environ.get("FAKE_MPS_CLIENTS") == "none":
        return []
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if f"CUDA_MPS_PIPE_DIRECTORY={pipe}".encode() in environ and any(s in cmdline for s in CLIENT_SCRIPTS):
            if "python" in cmdline:
                found.append(int(proc.name))
    return found


def main() -> int:
    pipe = Path(os.environ["CUDA_MPS_PIPE_DIRECTORY"])
    command = "start" if sys.argv[1:] == ["-d"] else sys.stdin.read().strip()
    with open(os.environ["FAKE_MPS_RECORD"], "a") as record:
        record.write(f"{command} {pipe}\n")
    pid = daemon_pid(pipe)
    if command == "start":
        if pid is not None:
            print("An instance of this daemon is already running", file=sys.stderr)
            return 1
        daemon = subprocess.Popen(
            ["sleep", "3600"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        (pipe / "daemon.pid").write_text(str(daemon.pid))
        return 0
    if pid is None:
        print("Cannot find MPS control daemon process", file=sys.stderr)
        return 1
    if command == "quit":
        os.kill(pid, signal.SIGTERM)
        (pipe / "daemon.pid").unlink()
    elif command == "get_server_list":
        print(pid)
    elif command.startswith("get_client_list"):
        print("\n".join(map(str, clients(pipe))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
