"""Fixtures for the Vault backend tests: a controllable clock and the Vault HTTP test double."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplatform.core.vault import VaultConfig
from tests.unit.security.fake_vault import FakeClock, FakeVault, Role

SA_JWT = "eyJhbGciOiJSUzI1NiJ9.model-serving-sa.signature"
OTHER_JWT = "eyJhbGciOiJSUzI1NiJ9.feature-store-sa.signature"
SECRET_PATH = "mlplatform/model-serving"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def vault(clock: FakeClock) -> Iterator[FakeVault]:
    """Vault with a ``model-serving`` role bound to SA model-serving in namespace mlplatform."""
    with FakeVault(clock) as fake:
        st = fake.state
        st.roles["model-serving"] = Role(
            {"model-serving"}, {"mlplatform"}, ["mlplatform-model-serving"], 300, 14400
        )
        st.jwts[SA_JWT] = ("model-serving", "mlplatform")
        st.jwts[OTHER_JWT] = ("feature-store", "mlplatform")
        st.policies["mlplatform-model-serving"] = {
            f"secret/data/{SECRET_PATH}",
            "secret/data/mlplatform/shared",
        }
        st.put_secret(
            "secret", SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v1", "MLFLOW_TRACKING_PASSWORD": "mlf-v1"}
        )
        st.put_secret("secret", "mlplatform/feature-store", {"REDIS_PASSWORD": "not-yours"})
        yield fake


@pytest.fixture
def sa_token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(SA_JWT + "\n")
    return path


@pytest.fixture
def config(vault: FakeVault, sa_token: Path) -> VaultConfig:
    return VaultConfig(
        addr=vault.url,
        role="model-serving",
        secret_paths=(SECRET_PATH,),
        token_path=sa_token,
        refresh_interval_s=60.0,
        timeout_s=2.0,
    )
