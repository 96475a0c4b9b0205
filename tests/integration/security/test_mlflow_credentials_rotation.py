"""The services' MLflow credentials through the secrets interface, rotated live: a real MLflow
tracking server with MLflow's own basic authentication (``mlflow server --app-name basic-auth``,
admin from its auth config file, a service user created through its REST API), model-serving's
secrets from the session's OpenBao (``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` in
``mlplatform/dev/model-serving``, role mlplatform-dev-model-serving), the service context
(``build_context``, where every service takes them from its backend) and serving's own model
repository loading a model through the server.

The password is changed in MLflow (``PATCH /api/2.0/mlflow/users/update-password``): a registry call
with the old one is refused (the loaded model keeps serving); then in Vault: the next registry call
(an alias poll's ``reload``) succeeds with the new one, the old one stays refused by MLflow, and no
password reaches the log.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from mlplatform.core.app import build_context
from mlplatform.core.mlflow_auth import MLFLOW_CREDENTIALS
from mlplatform.core.registry import mlflow_client
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.repository import ModelRepository
from tests.faults.registry import MlflowServer
from tests.helpers import wait_until
from tests.integration.security.vault_service import login_as
from tests.openbao import OpenBao
from tests.procs import free_port
from tests.unit.serving.registry_models import FOREST, shared_registry
from tests.unit.serving.support import make_settings

pytestmark = pytest.mark.integration

PATH = "mlplatform/dev/model-serving"
ADMIN, ADMIN_PW = "admin", "adm1n-mlflow-Secret"
USER, OLD_PW, NEW_PW = "model-serving", "0ld-mlflow-Secret", "n3w-mlflow-Secret"


@pytest.fixture
def mlflow_env():
    """The process's MLflow credential variables, restored afterwards (the service writes them)."""
    saved = {name: os.environ.get(name) for name in (*MLFLOW_CREDENTIALS, "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    for name in MLFLOW_CREDENTIALS:
        os.environ.pop(name, None)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"  # a busy 2-core machine: scrypt checks are slow
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _status(url: str, user: str, password: str) -> int:
    r = httpx.get(
        f"{url}/api/2.0/mlflow/registered-models/alias",
        params={"name": FOREST, "alias": "champion"},
        auth=(user, password),
        timeout=60,
    )
    return r.status_code


def _set_password(url: str, method: str, action: str, password: str) -> None:
    """As the admin, ``users/create`` or ``users/update-password`` for USER (MLflow's basic-auth API)."""
    r = httpx.request(
        method,
        f"{url}/api/2.0/mlflow/users/{action}",
        json={"username": USER, "password": password},
        auth=(ADMIN, ADMIN_PW),
        timeout=60,
    )
    assert r.status_code == 200, r.text


async def test_mlflow_credentials_rotate_through_vault(
    openbao: OpenBao, tmp_path: Path, tmp_path_factory, mlflow_env, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    reg = shared_registry(tmp_path_factory.getbasetemp() / "serving-registry")  # built once a session
    registry_s = time.monotonic() - t0
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {ADMIN_PW}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # successful checks cached (one worker: update-password drops the entry at once), so the
        # scrypt check runs once per password, not per request
        "auth_cache_ttl_seconds = 60\n"
    )
    server = MlflowServer(
        reg.uri,
        free_port(),
        tmp_path,
        app_name="basic-auth",
        env={"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key"},
    )
    started = time.monotonic()
    server.start()
    startup_s = time.monotonic() - started
    backend = None
    repo = None
    try:
        _set_password(server.url, "POST", "create", OLD_PW)
        assert _status(server.url, USER, OLD_PW) == 200
        assert _status(server.url, USER, "guess") == 401  # the server does check passwords

        openbao.put(PATH, {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": OLD_PW})
        backend = login_as(openbao, tmp_path, "model-serving", PATH)
        settings = make_settings(
            reg,
            tmp_path,
            models=FOREST,
            mlflow_tracking_uri=server.url,
            runtime="native",
            model_cache_dir=tmp_path / "cache",
        )
        build_context("model-serving", settings, secrets=backend)  # where every service takes them
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == USER
        repo = ModelRepository(settings, ServingMetrics(CollectorRegistry()))
        await repo.start()
        await wait_until(repo.ready, 120, "the model loaded through the basic-auth server")
        loaded_s = time.monotonic() - t0 - registry_s - startup_s
        version = repo.get(FOREST).model.version

        # 1. the password changes in MLflow: the old one is refused, the loaded model keeps serving
        _set_password(server.url, "PATCH", "update-password", NEW_PW)
        with pytest.raises(RuntimeError, match="answered 401"):
            await repo.reload(FOREST, force=False)
        assert repo.get(FOREST).model.version == version

        # 2. ... and in Vault: the next registry call succeeds with the new one
        written = time.monotonic()
        openbao.put(PATH, {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": NEW_PW})
        applied = (
            await wait_until(lambda: os.environ.get("MLFLOW_TRACKING_PASSWORD") == NEW_PW, 10, "the rotation")
            - written
        )
        assert await repo.reload(FOREST, force=False) is False  # resolved (same version), no error
        # MLflow's own client (what downloads a model) reads them at its next request too
        assert mlflow_client(server.url).get_model_version_download_uri(FOREST, version)
        assert _status(server.url, USER, OLD_PW) == 401
        assert _status(server.url, USER, NEW_PW) == 200

        # 3. a credential removed from Vault is refused, the current one kept and counted
        openbao.put(PATH, {"MLFLOW_TRACKING_USERNAME": USER})
        await wait_until(
            lambda: backend.stats.rejected.get("MLFLOW_TRACKING_PASSWORD") == 1, 10, "the refusal"
        )
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == NEW_PW
        assert await repo.reload(FOREST, force=False) is False
    finally:
        if repo is not None:
            await repo.stop()
        if backend is not None:
            backend.close()
        server.stop()
    assert "rotated secret MLFLOW_TRACKING_PASSWORD applied" in caplog.text
    for secret in (OLD_PW, NEW_PW, ADMIN_PW):
        assert secret not in caplog.text
    print(
        f"MLflow credential rotation: demo registry {registry_s:.1f}s (shared by the session), basic-auth "
        f"server up in {startup_s:.1f}s, user + model loaded {loaded_s:.1f}s, the rest "
        f"{time.monotonic() - t0 - registry_s - startup_s - loaded_s:.1f}s; "
        f"new password applied {applied:.2f}s after the Vault write (refresh interval 0.5 s)"
    )
