"""A real Hub API on loopback for the tests: olah, offline, serving git repositories as the Hub serves models, and
Hub clients run against it in fresh processes (Hub clients read HF_ENDPOINT when they are imported)."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=fsr-zoo test", "-c", "user.email=test@fsr-zoo.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(mirrors: Path, workdir: Path, probe_repo: str):
    """olah on a free loopback port, offline, serving the git repositories under `mirrors` (`models/<org>/<name>`,
    branch main); yields its endpoint once it answers for `probe_repo`."""
    port = free_port()
    (workdir / "configs.toml").write_text(
        textwrap.dedent(f"""
        [basic]
        host = "127.0.0.1"
        port = {port}
        repos-path = "{workdir / "olah-cache"}"
        mirror-netloc = "127.0.0.1:{port}"
        mirror-lfs-netloc = "127.0.0.1:{port}"
        mirrors-path = ["{mirrors}"]
        [accessibility]
        offline = true
    """)
    )
    olah = shutil.which("olah-cli", path=str(Path(sys.executable).parent)) or shutil.which("olah-cli")
    assert olah, "olah is a test dependency: pip install -e .[test]"
    with open(workdir / "olah.log", "w") as log:
        server = subprocess.Popen(
            [olah, "-c", str(workdir / "configs.toml")], cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"{endpoint}/api/models/{probe_repo}/revision/main", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            else:
                pytest.fail(f"olah did not start: {(workdir / 'olah.log').read_text()[-2000:]}")
            yield endpoint
        finally:
            server.kill()
            server.wait()


def run_client(endpoint: str, hf_home: Path, *parts: str, offline: bool = False) -> dict:
    """Run a Hub client script (its parts, each indented as it likes) in a fresh process against the server, or
    offline from the cache; its last stdout line is JSON."""
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "1" if offline else "0",
    }
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", "".join(map(textwrap.dedent, parts))],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
