"""Shared session fixtures.

``demo_registry`` trains the small demo models once per test session (once per session across
pytest-xdist workers too, guarded by a file lock) into a temporary data directory with a real
SQLite MLflow registry. Depend on it wherever a test needs registered models.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# model-serving's gRPC port defaults to 8081: off in every test (in-process apps and the service processes
# they start inherit this) unless a test sets SERVING_GRPC_PORT / grpc_port, so parallel tests never collide.
os.environ.setdefault("SERVING_GRPC_PORT", "0")

# The test process starts as every entry point does: with the process environment defaults (core.environment).
from mlplatform.core.environment import apply_environment_defaults  # noqa: E402

apply_environment_defaults()

# Feast's import sets PROMETHEUS_MULTIPROC_DIR process-wide; a prometheus_client imported after that keeps
# values in mmap files shared by every registry of the process, so apps built by different tests would count
# into each other. Import it now with the variables unset, as `mlplatform serve` does (cli._private_prometheus).
for _var in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR", "prometheus_multiproc_dir"):
    os.environ.pop(_var, None)
import prometheus_client  # noqa: E402,F401

# torch before regopy: with regopy's native library loaded first, importing torch in the same process aborts
# ("double free or corruption"); the other order is fine. Test modules import regopy at collection (the
# Gatekeeper policies) and torch later (feast, mlflow.pytorch), so load torch now.
import torch  # noqa: E402,F401

DEMO_ROWS = 20_000
DEMO_SEED = 11


@dataclass(frozen=True)
class DemoRegistry:
    """Where the demo models live: MLflow URI, data directory and the model's feature columns."""

    tracking_uri: str
    data_dir: Path
    features: tuple[str, ...]
    summary: dict = field(default_factory=dict)

    @property
    def model_features(self) -> tuple[str, ...]:
        return self.features

    def env(self) -> dict[str, str]:
        """Environment variables pointing a service process at this registry and data directory."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLPLATFORM_DATA_DIR": str(self.data_dir)}


@pytest.fixture(scope="session")
def demo_registry(tmp_path_factory: pytest.TempPathFactory) -> DemoRegistry:
    """Small demo models (20k rows, 20 trees, 4 epochs) registered as champion in a tmp SQLite MLflow."""
    from filelock import FileLock

    from mlplatform.features.contract import MODEL_FEATURES
    from mlplatform.training.pipeline import TrainSettings, run_training

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by every worker of this session
    root = base / "demo_registry"
    done = root / "summary.json"
    with FileLock(str(base / "demo_registry.lock")):
        if not done.exists():
            settings = TrainSettings(
                rows=DEMO_ROWS,
                seed=DEMO_SEED,
                data_dir=root,
                tracking_uri=None,
                n_estimators=20,
                max_depth=10,
                epochs=4,
                reference_rows=2000,
            )
            summary = run_training(settings, force=True, progress=False)
            done.write_text(json.dumps(summary))
    summary = json.loads(done.read_text())
    return DemoRegistry(
        tracking_uri=summary["tracking_uri"], data_dir=root, features=tuple(MODEL_FEATURES), summary=summary
    )


@pytest.fixture(scope="session")
def _postgres_server(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL server (Debian's binaries) for the whole session; see ``tests/pg.py``."""
    from tests.pg import start_postgres

    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres(_postgres_server):
    """The session's PostgreSQL server, started again (same port and data) if it is no longer running.

    In one full-suite run the postmaster was gone by the time the topology test ran (every later
    PostgreSQL test failed with "connection refused"); its log went with the run's temp directory. A
    test must not fail for an earlier one's casualty: the server is restarted, and the exit is printed
    with the tail of its log so the next occurrence can be traced."""
    server = _postgres_server
    if server.proc.poll() is not None:
        log = (server.data_dir.parent / "postgres.log").read_text(errors="replace")[-3000:]
        print(f"session PostgreSQL had exited ({server.proc.returncode}); restarting it. Log tail:\n{log}")
        server.restart()
    return server


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory):
    """A real OpenBao dev server for the whole session, set up by scripts/vault-bootstrap.sh for dev
    and prod (Kubernetes auth against a TokenReview double); see ``tests/openbao.py``."""
    from tests.openbao import start_openbao

    server = start_openbao(tmp_path_factory.mktemp("openbao"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def text_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo summarizer, untrained (random weights; ``save_pretrained`` layout), built once per session."""
    from filelock import FileLock

    from mlplatform.training.text import build_text_model

    os.environ["HF_HUB_OFFLINE"] = "1"
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    out = base / "text_model"
    with FileLock(str(base / "text_model.lock")):
        if not (out / "config.json").exists():
            build_text_model(out, train_seconds=0, seed=0)
    return out


@pytest.fixture(scope="session")
def text_registry(tmp_path_factory: pytest.TempPathFactory, text_model_dir: Path) -> DemoRegistry:
    """``summarizer@champion`` (the untrained text model, MLflow transformers flavour) in a tmp SQLite MLflow."""
    from filelock import FileLock

    from mlplatform.training.text import log_and_register_text_model

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "text_registry"
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    done = root / "version.txt"
    with FileLock(str(base / "text_registry.lock")):
        if not done.exists():
            (root / "mlflow").mkdir(parents=True, exist_ok=True)
            done.write_text(log_and_register_text_model(text_model_dir, uri))
    return DemoRegistry(
        tracking_uri=uri, data_dir=root, features=("text_input",), summary={"version": done.read_text()}
    )
