"""A real ``redis-server`` with a password on a free port (``make sysdeps`` installs it: mk/features.mk)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.helpers import stop_process, wait_until_sync
from tests.procs import free_port

REDIS_PASSWORD = "feast-test-pw"


def _pings(client: redis.Redis, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"redis-server exited with {proc.returncode}")
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


@contextmanager
def running_redis(
    data_dir: Path, password: str = REDIS_PASSWORD
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start redis-server (no persistence) and yield ``("127.0.0.1:<port>", process)`` once it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: `make sysdeps` installs it (APT_PACKAGES in mk/features.mk)"
        )
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password]
    args += ["--save", "", "--appendonly", "no", "--dir", str(data_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    try:
        wait_until_sync(lambda: _pings(client, proc), 20, "redis-server to answer PING", step_s=0.05)
        yield f"127.0.0.1:{port}", proc
    finally:
        client.close()
        stop_process(proc, grace_s=10)
