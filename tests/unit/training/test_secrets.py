"""The retraining Job's secrets from Vault (``mlplatform.training.secrets``, ``mlplatform retrain/train``).

Vault is the session's real OpenBao server (tests/openbao.py) with what
``scripts/vault-bootstrap.sh --env prod`` sets up for the Job: role ``mlplatform-prod-retrain`` bound
to ServiceAccount ``drift-detection-retrain`` in ``mlplatform-prod``, reading only
``secret/data/mlplatform/prod/retrain``. The environment is the one the chart's Job template sets
(``MLPLATFORM_SECRETS_BACKEND=vault``, ``VAULT_*``, a projected token file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mlplatform.training.pipeline as pipeline_mod
import mlplatform.training.retrain as retrain_mod
from mlplatform.cli import app as cli
from mlplatform.core.vault import VaultStartupError
from mlplatform.training.pipeline import TrainSettings
from mlplatform.training.secrets import TRAINING_SECRETS, load_training_secrets
from tests.openbao import OpenBao
from tests.procs import free_port

ROLE = "mlplatform-prod-retrain"
SECRET_PATH = "mlplatform/prod/retrain"
FEATURES_URL = "postgresql://mlplatform:f34t-s3cret@mlplatform-pg-rw.mlplatform-prod:5432/mlplatform"
MLFLOW_USER, MLFLOW_PASSWORD = "retrain-bot", "mlfl0w-s3cret"


@pytest.fixture
def vault(openbao: OpenBao) -> Iterator[OpenBao]:
    openbao.put(
        SECRET_PATH,
        {
            "FEATURES_DATABASE_URL": FEATURES_URL,
            "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
            "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
            "UNRELATED": "not-a-training-secret",
        },
    )
    yield openbao
    if openbao.client().sys.is_sealed():
        openbao.unseal()


@pytest.fixture
def job_jwt(vault: OpenBao) -> str:
    """The Job pod's projected token (ServiceAccount drift-detection-retrain)."""
    return vault.kube.mint("mlplatform-prod", "drift-detection-retrain")


@pytest.fixture
def job_env(vault: OpenBao, job_jwt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The Job template's Vault environment; the training secrets unset (restored afterwards)."""
    token = tmp_path / "serviceaccount" / "token"
    token.parent.mkdir()
    token.write_text(job_jwt)
    env = {
        "MLPLATFORM_SECRETS_BACKEND": "vault",
        "VAULT_ADDR": vault.addr,
        "VAULT_ROLE": ROLE,
        "VAULT_SECRET_PATH": SECRET_PATH,
        "VAULT_SA_TOKEN_PATH": str(token),
        "VAULT_TIMEOUT_S": "2",
        "MLPLATFORM_DATA_DIR": str(tmp_path / "data"),
    }
    for name in (*TRAINING_SECRETS, "UNRELATED", "MLFLOW_TRACKING_URI"):
        # setenv first so the undo removes what load_training_secrets() sets (delenv of an unset
        # variable records nothing, and the Vault values would leak into later tests)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_vault_values_reach_train_settings(job_env, vault, job_jwt, caplog):
    caplog.set_level(logging.DEBUG)
    reviews = vault.kube.reviews
    assert load_training_secrets() == TRAINING_SECRETS
    assert TrainSettings().feature_database_url == FEATURES_URL
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == (
        MLFLOW_USER,
        MLFLOW_PASSWORD,
    )
    assert "UNRELATED" not in os.environ  # only the training secrets
    # logged in once (one TokenReview) as the Job's own role with the projected token
    assert vault.kube.reviews == reviews + 1
    assert f"role {ROLE}" in caplog.text
    assert "FEATURES_DATABASE_URL" in caplog.text  # the names, never the values
    for secret in ("f34t-s3cret", MLFLOW_PASSWORD, job_jwt):
        assert secret not in caplog.text


def test_environment_wins_over_vault(job_env, monkeypatch):
    local = "postgresql://me@localhost:5432/features"
    monkeypatch.setenv("FEATURES_DATABASE_URL", local)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")
    assert load_training_secrets() == ("MLFLOW_TRACKING_PASSWORD",)
    assert TrainSettings().feature_database_url == local
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "someone-else"


def test_env_backend_never_calls_vault(job_env, vault, monkeypatch):
    reviews = vault.kube.reviews
    for backend in ("env", ""):
        monkeypatch.setenv("MLPLATFORM_SECRETS_BACKEND", backend)
        assert load_training_secrets() == ()
    monkeypatch.delenv("MLPLATFORM_SECRETS_BACKEND")
    assert load_training_secrets() == ()
    assert vault.kube.reviews == reviews  # no login
    assert TrainSettings().feature_database_url is None
    monkeypatch.setenv("MLPLATFORM_SECRETS_BACKEND", "aws")
    with pytest.raises(ValueError, match="'env' or 'vault'"):
        load_training_secrets()


def test_a_secret_without_the_database_url_warns(job_env, vault, caplog):
    vault.put(SECRET_PATH, {"MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD})
    with caplog.at_level(logging.WARNING, logger="mlplatform.training.secrets"):
        assert load_training_secrets() == ("MLFLOW_TRACKING_PASSWORD",)
    assert "FEATURES_DATABASE_URL is neither set nor in Vault secret/mlplatform/prod/retrain" in caplog.text
    assert TrainSettings().feature_database_url is None


def test_the_services_account_cannot_log_in_as_the_job(job_env, vault):
    Path(job_env["VAULT_SA_TOKEN_PATH"]).write_text(vault.kube.mint("mlplatform-prod", "drift-detection"))
    with pytest.raises(VaultStartupError, match="rejected the login"):
        load_training_secrets()


# -- the CLI: the secrets reach the run's TrainSettings; a Vault failure is one line, exit 2 --------


def test_retrain_trains_with_the_vault_url(job_env, monkeypatch):
    seen: list[TrainSettings] = []

    def fake_run(settings):
        seen.append(TrainSettings())  # what run_retraining builds when none is passed
        raise retrain_mod.RetrainError("stop here")

    monkeypatch.setattr(retrain_mod, "run_retraining", fake_run)
    result = CliRunner().invoke(cli, ["retrain", "--model", "fraud-detector"])
    assert result.exit_code == 1 and result.stderr == "error: stop here\n"
    assert [s.feature_database_url for s in seen] == [FEATURES_URL]
    assert "f34t-s3cret" not in result.output


def test_train_trains_with_the_vault_url(job_env, monkeypatch):
    seen: list[TrainSettings] = []
    monkeypatch.setattr(pipeline_mod, "run_training", lambda settings, **kw: seen.append(settings))
    result = CliRunner().invoke(cli, ["train", "--rows", "1000"])
    assert result.exit_code == 0, result.output
    assert [s.feature_database_url for s in seen] == [FEATURES_URL]


def _unreachable(env: dict[str, str], vault: OpenBao) -> str:
    env["VAULT_ADDR"] = f"http://127.0.0.1:{free_port()}"
    return "is unreachable"


def _sealed(env: dict[str, str], vault: OpenBao) -> str:
    vault.seal()
    return "is sealed or unavailable"


def _no_secret(env: dict[str, str], vault: OpenBao) -> str:
    vault.client().secrets.kv.v2.delete_metadata_and_all_versions(path=SECRET_PATH, mount_point="secret")
    return "no KV v2 secret at secret/data/{mlplatform/prod/retrain}"


def _wrong_role(env: dict[str, str], vault: OpenBao) -> str:
    env["VAULT_ROLE"] = "mlplatform-prod-drift-detection"
    return "rejected the login"


def _no_addr(env: dict[str, str], vault: OpenBao) -> str:
    env["VAULT_ADDR"] = ""
    return "VAULT_ADDR is not set"


@pytest.mark.parametrize("command", [["retrain", "--model", "fraud-detector"], ["train"]])
@pytest.mark.parametrize("failure", [_unreachable, _sealed, _no_secret, _wrong_role, _no_addr])
def test_vault_failure_is_one_line_and_exit_2(job_env, vault, job_jwt, monkeypatch, command, failure):
    env = dict(job_env)
    expected = failure(env, vault)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ran: list[object] = []
    monkeypatch.setattr(retrain_mod, "run_retraining", lambda *a, **kw: ran.append(a))
    monkeypatch.setattr(pipeline_mod, "run_training", lambda *a, **kw: ran.append(a))
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: cannot read the training secrets from Vault: ")
    assert expected in result.stderr
    assert ran == []  # no training work
    assert "Traceback" not in result.output and job_jwt not in result.output
