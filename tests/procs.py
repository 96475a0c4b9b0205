"""Start real service processes on free ports and wait for readiness (no sleeps as synchronisation)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers import stop_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_until_exit(
    service: str, env: Mapping[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``mlplatform serve <service>`` on a free port with exactly ``env`` until it exits (a start-up
    meant to fail); its exit code and its stdout and stderr, as text."""
    return subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "serve", service, "--port", str(free_port())],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@dataclass
class ServiceProcess:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        return stop_process(self.proc, timeout, sig)


def wait_ready(
    url: str,
    deadline_s: float,
    proc: subprocess.Popen[bytes] | None = None,
    path: str = "/v2/health/ready",
    log: Path | None = None,
) -> None:
    """Poll ``url + path`` until it answers 200, the process dies, or the deadline passes; the
    error names the last answer and ends with the tail of ``log`` when one is given."""
    tail = (lambda: "\n" + log.read_text(errors="replace")[-3000:]) if log else (lambda: "")
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before becoming ready{tail()}")
        try:
            r = httpx.get(url + path, timeout=1.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url}{path} not ready after {deadline_s}s (last: {last}){tail()}")


def start_service(
    name: str, env: dict[str, str], log_dir: Path, port: int | None = None, ready_timeout: float = 120.0
) -> ServiceProcess:
    """Run ``mlplatform serve <name>`` as a child process and wait until its readiness probe is 200."""
    port = port or free_port()
    if name == "model-serving" and "SERVING_GRPC_PORT" not in env and "SERVING_GRPC_PORT" not in os.environ:
        env = {**env, "SERVING_GRPC_PORT": str(free_port())}  # gRPC on, as deployed, on a port of its own
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlplatform.cli",
                "serve",
                name,
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    svc = ServiceProcess(name, port, proc, log_path)
    try:
        wait_ready(svc.url, ready_timeout, proc)
    except Exception as exc:
        svc.stop(signal.SIGKILL)
        raise RuntimeError(f"{name} did not become ready: {exc}\n--- log ---\n{svc.logs()[-4000:]}") from exc
    return svc


@contextmanager
def running_service(name: str, env: dict[str, str], log_dir: Path, **kw: object) -> Iterator[ServiceProcess]:
    svc = start_service(name, env, log_dir, **kw)  # type: ignore[arg-type]
    try:
        yield svc
    finally:
        svc.stop()
