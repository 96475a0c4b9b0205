"""Fixtures for the Vault backend tests: a controllable clock and a real OpenBao server.

``openbao`` (tests/conftest.py) is one ``bao server -dev`` per session, set up by
scripts/vault-bootstrap.sh: role ``mlplatform-dev-model-serving`` bound to ServiceAccount
``model-serving`` in ``mlplatform-dev``, policy reading only ``secret/data/mlplatform/dev/model-serving``.
Each test writes fresh versions of the secrets it reads. The backend's schedule (renewal, re-read)
runs on an injected clock; token TTLs are OpenBao's own, in real time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplatform.core.vault import VaultConfig
from tests.clock import FakeClock
from tests.openbao import OpenBao

NAMESPACE = "mlplatform-dev"
ROLE = "mlplatform-dev-model-serving"
SECRET_PATH = "mlplatform/dev/model-serving"
OTHER_PATH = "mlplatform/dev/feature-store"
VALUES = {"REDIS_PASSWORD": "r3dis-v1", "MLFLOW_TRACKING_PASSWORD": "mlf-v1"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def vault(openbao: OpenBao) -> OpenBao:
    """The session's OpenBao with fresh versions of model-serving's and feature-store's secrets."""
    openbao.put(SECRET_PATH, VALUES)
    openbao.put(OTHER_PATH, {"REDIS_PASSWORD": "not-yours"})
    return openbao


@pytest.fixture
def sa_token(vault: OpenBao, tmp_path: Path) -> Path:
    """The projected service-account token of model-serving in mlplatform-dev."""
    return vault.jwt_file(tmp_path, NAMESPACE, "model-serving")


@pytest.fixture
def config(vault: OpenBao, sa_token: Path) -> VaultConfig:
    return VaultConfig(
        addr=vault.addr,
        role=ROLE,
        secret_paths=(SECRET_PATH,),
        token_path=sa_token,
        refresh_interval_s=60.0,
        timeout_s=2.0,
    )
