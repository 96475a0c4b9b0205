"""A private copy of the demo MLflow registry, and a real ``mlflow server`` over it on a free port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import stop_process
from tests.procs import wait_ready


def copy_registry(demo_registry: Any, dest: Path) -> str:
    """Copy the demo registry's SQLite DB; returns its ``sqlite:///`` URI.

    The artifacts stay where training wrote them (the DB records their absolute locations), so the
    copy serves the same model files while new versions and alias moves stay private to the test.
    """
    src = Path(demo_registry.tracking_uri.removeprefix("sqlite:///"))
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "mlflow.db"
    shutil.copyfile(src, target)
    return f"sqlite:///{target}"


@dataclass
class MlflowServer:
    """``mlflow server`` (tracking + registry) on ``port`` over the SQLite URI ``backend``.

    ``app_name``: ``mlflow server --app-name`` (``basic-auth``: MLflow's own username/password
    authentication, configured by ``env``'s ``MLFLOW_AUTH_CONFIG_PATH``)."""

    backend: str
    port: int
    workdir: Path
    _: KW_ONLY
    app_name: str | None = None
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"mlflow-server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 120.0) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(
                [
                    str(mlflow),
                    "server",
                    "--backend-store-uri",
                    self.backend,
                    "--default-artifact-root",
                    str(self.workdir / "artifacts"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    *(["--app-name", self.app_name] if self.app_name else []),
                ],
                env={**os.environ, **self.env} if self.env else None,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            wait_ready(self.url, ready_timeout, self.proc, path="/health", log=self.log_path)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
