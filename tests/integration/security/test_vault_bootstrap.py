"""scripts/vault-bootstrap.sh and the per-service Vault policies (policies/vault/*.hcl), run against
a real OpenBao server.

Each test gets a fresh ``bao server -dev`` (about half a second, tests/openbao.py) and runs the
script with OpenBao's ``bao`` CLI, then reads back what it configured (auth methods, mounts,
policies, roles, secrets) as the root operator.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from tests.openbao import BOOTSTRAP, IDENTITIES, OpenBao, bootstrap, start_openbao

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[OpenBao]:
    """A fresh OpenBao dev server nothing has configured yet."""
    server = start_openbao(tmp_path / "bao", envs=())
    try:
        yield server
    finally:
        server.stop()


def run(bao: OpenBao, args: list[str], check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", str(BOOTSTRAP), *args],
        env={**bao.cli_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_bootstrap_enables_auth_kv_and_binds_one_role_per_identity(bao):
    out = bootstrap(bao, "prod", "--kv-mount", "kv-ml")
    root = bao.client()
    assert root.sys.list_auth_methods()["data"]["kubernetes/"]["type"] == "kubernetes"
    kv = root.sys.list_mounted_secrets_engines()["data"]["kv-ml/"]
    assert kv["type"] == "kv" and kv["options"]["version"] == "2"
    assert root.read("auth/kubernetes/config")["data"]["kubernetes_host"] == bao.kube.url
    ours = sorted(p for p in root.sys.list_policies()["data"]["policies"] if p.startswith("mlplatform-"))
    assert ours == sorted(f"mlplatform-prod-{i}" for i in IDENTITIES)
    assert sorted(root.list("auth/kubernetes/role")["data"]["keys"]) == ours
    for identity, account in IDENTITIES.items():
        name = f"mlplatform-prod-{identity}"
        policy = root.sys.read_policy(name)["data"]["rules"]
        assert f'path "kv-ml/data/mlplatform/prod/{identity}"' in policy
        assert "<env>" not in policy and "<kv-mount>" not in policy
        role = root.read(f"auth/kubernetes/role/{name}")["data"]
        assert role["bound_service_account_names"] == [account]
        assert role["bound_service_account_namespaces"] == ["mlplatform-prod"]
        assert role["token_policies"] == [name]
        assert (role["token_ttl"], role["token_max_ttl"]) == (3600, 86400)
        assert f"VAULT_ROLE={name} VAULT_SECRET_PATH=mlplatform/prod/{identity}" in out
        # the role works end to end: its ServiceAccount logs in and gets exactly that policy
        client = hvac.Client(url=bao.addr)
        auth = client.auth.kubernetes.login(role=name, jwt=bao.kube.mint("mlplatform-prod", account))
        assert auth["auth"]["policies"] == ["default", name]


def test_rerun_skips_existing_mounts_and_keeps_existing_secrets(bao, tmp_path):
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "feature-store.json").write_text('{"REDIS_PASSWORD": "s3cret-value"}')
    out = bootstrap(bao, "dev", "--kv-mount", "kv-ml", "--seed-dir", str(seed))
    assert "s3cret-value" not in out
    kv = bao.client().secrets.kv.v2
    got = kv.read_secret_version(path="mlplatform/dev/feature-store", mount_point="kv-ml")["data"]
    assert got["data"] == {"REDIS_PASSWORD": "s3cret-value"} and got["metadata"]["version"] == 1
    with pytest.raises(hvac.exceptions.InvalidPath):  # no seed file: no secret
        kv.read_secret_version(path="mlplatform/dev/model-serving", mount_point="kv-ml")
    # second run: mounts exist, the secret exists and is left alone
    (seed / "feature-store.json").write_text('{"REDIS_PASSWORD": "other"}')
    out = bootstrap(bao, "dev", "--kv-mount", "kv-ml", "--seed-dir", str(seed))
    assert "kubernetes auth already enabled at kubernetes/" in out
    assert "secrets engine already mounted at kv-ml/" in out
    assert "exists; left as is" in out
    got = kv.read_secret_version(path="mlplatform/dev/feature-store", mount_point="kv-ml")["data"]
    assert got["data"] == {"REDIS_PASSWORD": "s3cret-value"} and got["metadata"]["version"] == 1


def test_dry_run_prints_commands_without_calling_vault(bao):
    # VAULT_BIN=false: any CLI call would fail the script
    out = run(bao, ["--env", "staging", "--audience", "vault", "--dry-run"], VAULT_BIN="false").stdout
    assert "+ vault auth enable -path=kubernetes kubernetes" in out
    assert out.count("+ vault policy write mlplatform-staging-") == len(IDENTITIES) == 5
    assert "bound_service_account_namespaces=mlplatform-staging" in out and "audience=vault" in out
    assert (
        "+ vault write auth/kubernetes/role/mlplatform-staging-retrain "
        "bound_service_account_names=drift-detection-retrain "
    ) in out
    assert 'path "secret/data/mlplatform/staging/retrain"' in out
    assert "kubernetes/" not in bao.client().sys.list_auth_methods()["data"]


def test_every_policy_template_is_installed():
    """policies/vault/*.hcl and the script's identities are the same set: no policy left uninstalled."""
    assert {p.stem for p in (REPO / "policies" / "vault").glob("*.hcl")} == set(IDENTITIES)
    script = BOOTSTRAP.read_text()
    assert all(f"  {i}={sa}\n" in script for i, sa in IDENTITIES.items())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "qa"], "--env must be dev, staging or prod"),
        (["--env", "prod", "--bogus"], "unknown argument: --bogus"),
        (["--env", "prod", "--seed-dir", "{tmp}/no-such-dir"], "is not a directory"),
    ],
)
def test_bad_arguments_fail_clearly(tmp_path, args, message):
    proc = subprocess.run(
        ["bash", str(BOOTSTRAP), *(a.format(tmp=tmp_path) for a in args)],
        env={"PATH": "/usr/bin:/bin", "VAULT_BIN": "false", "VAULT_ADDR": "http://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and message in proc.stderr


def test_unreachable_or_sealed_vault_stops_the_script(bao):
    bao.seal()
    proc = run(bao, ["--env", "prod"], check=False)
    assert proc.returncode == 2 and "unreachable or sealed" in proc.stderr
    bao.unseal()
    assert "kubernetes/" not in bao.client().sys.list_auth_methods()["data"]  # nothing was done


@pytest.mark.parametrize("identity", IDENTITIES)
def test_identity_policy_is_least_privilege(identity):
    text = (REPO / "policies" / "vault" / f"{identity}.hcl").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    paths = re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', code)
    assert paths == [(f"<kv-mount>/data/mlplatform/<env>/{identity}", '"read"')]
    assert code.count("path ") == 1


def _read(bao: OpenBao, path: str) -> tuple[dict[str, str], int]:
    got = bao.client().secrets.kv.v2.read_secret_version(path=path, mount_point="secret")["data"]
    return got["data"], got["metadata"]["version"]


def test_drift_database_url_is_one_key_of_the_drift_secret(bao, tmp_path):
    """--drift-database-url-file sets DRIFT_DATABASE_URL of mlplatform/<env>/drift-detection from a file:
    created when missing, only that key patched when the secret exists; the DSN never on argv."""
    url = "postgresql://mlplatform:s3cret-pw@mlplatform-pg-rw.mlplatform-prod:5432/mlplatform"
    dsn = tmp_path / "dsn"
    dsn.write_text(url)
    out = bootstrap(bao, "prod", "--drift-database-url-file", str(dsn))
    assert _read(bao, "mlplatform/prod/drift-detection") == ({"DRIFT_DATABASE_URL": url}, 1)
    assert "DRIFT_DATABASE_URL of secret/mlplatform/prod/drift-detection" in out
    bao.put("mlplatform/prod/drift-detection", {"DRIFT_DATABASE_URL": "old", "MLPLATFORM_API_KEYS": "k"})
    out = bootstrap(bao, "prod", "--drift-database-url-file", str(dsn))
    assert _read(bao, "mlplatform/prod/drift-detection") == (
        {"DRIFT_DATABASE_URL": url, "MLPLATFORM_API_KEYS": "k"},
        3,
    )
    assert "s3cret-pw" not in out
    proc = run(bao, ["--env", "prod", "--drift-database-url-file", str(tmp_path / "missing")], check=False)
    assert proc.returncode == 2 and "is not a file" in proc.stderr


def test_feature_database_url_is_one_key_of_the_feature_store_and_retrain_secrets(bao, tmp_path):
    """--feature-database-url-file sets FEATURES_DATABASE_URL of mlplatform/<env>/feature-store and of
    mlplatform/<env>/retrain (the retraining Job's training rows) the same way (put when missing, patch
    when present, the URL only in the file); together with the drift one."""
    features = "postgresql://mlplatform:f34t-pw@mlplatform-pg-rw.mlplatform-prod:5432/mlplatform"
    drift = "postgresql://mlplatform:dr1ft-pw@mlplatform-pg-rw.mlplatform-prod:5432/mlplatform"
    (tmp_path / "features-url").write_text(features)
    (tmp_path / "drift-url").write_text(drift)
    bao.put("mlplatform/prod/retrain", {"MLFLOW_TRACKING_PASSWORD": "m"})
    args = ["--feature-database-url-file", str(tmp_path / "features-url")]
    out = bootstrap(bao, "prod", *args, "--drift-database-url-file", str(tmp_path / "drift-url"))
    assert _read(bao, "mlplatform/prod/feature-store") == ({"FEATURES_DATABASE_URL": features}, 1)
    assert _read(bao, "mlplatform/prod/retrain") == (
        {"FEATURES_DATABASE_URL": features, "MLFLOW_TRACKING_PASSWORD": "m"},
        2,
    )
    assert _read(bao, "mlplatform/prod/drift-detection") == ({"DRIFT_DATABASE_URL": drift}, 1)
    for identity in ("feature-store", "retrain"):
        assert f"{identity}: FEATURES_DATABASE_URL of secret/mlplatform/prod/{identity}" in out
    assert "f34t-pw" not in out and "dr1ft-pw" not in out
    proc = run(bao, ["--env", "prod", "--feature-database-url-file", str(tmp_path / "missing")], check=False)
    assert (
        proc.returncode == 2
        and "--feature-database-url-file" in proc.stderr
        and "is not a file" in proc.stderr
    )


def test_mlflow_credentials_are_written_per_identity_in_one_version(bao, tmp_path):
    """--mlflow-credentials-dir sets MLFLOW_TRACKING_USERNAME and _PASSWORD of each identity that has
    both files, in one write (one new version), patching only those keys; the values stay in files."""
    creds = tmp_path / "mlflow"
    creds.mkdir()
    (creds / "model-serving.username").write_text("model-serving")
    (creds / "model-serving.password").write_text("mlfl0w-serving-pw")
    (creds / "explainability.username").write_text("explainability")  # no password file: skipped
    bao.put("mlplatform/prod/model-serving", {"MLPLATFORM_API_KEYS": "k"})
    out = bootstrap(bao, "prod", "--mlflow-credentials-dir", str(creds))
    assert _read(bao, "mlplatform/prod/model-serving") == (
        {
            "MLPLATFORM_API_KEYS": "k",
            "MLFLOW_TRACKING_USERNAME": "model-serving",
            "MLFLOW_TRACKING_PASSWORD": "mlfl0w-serving-pw",
        },
        2,
    )
    assert "model-serving: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in out
    assert "explainability: MLFLOW" not in out
    assert "mlfl0w-serving-pw" not in out
    proc = run(bao, ["--env", "prod", "--mlflow-credentials-dir", str(tmp_path / "missing")], check=False)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
