"""scripts/vault-bootstrap.sh and the per-service Vault policies (policies/vault/*.hcl).

No Vault server or CLI can run here, so the script runs against a test double of the ``vault``
CLI on PATH: a shell script that records each invocation (argv and stdin) and answers the read
commands the script uses (``status``, ``auth list -format=json``, ``secrets list -format=json``,
``kv get``) the way the real CLI does (JSON keyed by mount path with a trailing slash; exit 2 for a
missing secret).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "vault-bootstrap.sh"
#: Vault identity -> the ServiceAccount its role is bound to: the four services run as a
#: ServiceAccount of their own name; ``retrain`` is drift-detection's retraining Job.
IDENTITIES = {
    "model-serving": "model-serving",
    "feature-store": "feature-store",
    "drift-detection": "drift-detection",
    "explainability": "explainability",
    "retrain": "drift-detection-retrain",
}

FAKE_VAULT = r"""#!/usr/bin/env bash
dir="$FAKE_VAULT_DIR/calls"
mkdir -p "$dir"
n=$(ls "$dir" | wc -l)
call="$dir/$(printf '%04d' "$n")"
printf '%s\0' "$@" > "$call.args"
if [[ "${!#}" == "-" ]]; then cat > "$call.stdin"; fi
case "$1 $2" in
  "status "*) [[ -f "$FAKE_VAULT_DIR/sealed" ]] && exit 2; exit 0 ;;
  "auth list") cat "$FAKE_VAULT_DIR/auth.json" 2>/dev/null || echo '{"token/": {"type": "token"}}' ;;
  "secrets list") cat "$FAKE_VAULT_DIR/secrets.json" 2>/dev/null || echo '{"cubbyhole/": {"type": "cubbyhole"}}' ;;
  "kv get") [[ -f "$FAKE_VAULT_DIR/exists" ]] && exit 0; echo "No value found" >&2; exit 2 ;;
esac
exit 0
"""


@pytest.fixture
def fake_vault(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "vault").write_text(FAKE_VAULT)
    (bindir / "vault").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "FAKE_VAULT_DIR": str(tmp_path),
        "VAULT_ADDR": "https://vault.example:8200",
    }
    return tmp_path, env


def run(args, env, check=True):
    proc = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def calls(tmp_path):
    folder = tmp_path / "calls"
    out = []
    for args in sorted(folder.glob("*.args")) if folder.exists() else []:
        stdin = args.with_suffix(".stdin")
        out.append(
            {
                "args": args.read_text().split("\0")[:-1],
                "stdin": stdin.read_text() if stdin.exists() else "",
            }
        )
    return out


def test_bootstrap_enables_auth_kv_and_binds_one_role_per_identity(fake_vault):
    tmp, env = fake_vault
    out = run(["--env", "prod"], env).stdout
    got = calls(tmp)
    argv = [c["args"] for c in got]
    assert ["auth", "enable", "-path=kubernetes", "kubernetes"] in argv
    assert ["write", "auth/kubernetes/config", "kubernetes_host=https://kubernetes.default.svc"] in argv
    assert ["secrets", "enable", "-path=secret", "-version=2", "kv"] in argv
    for identity, account in IDENTITIES.items():
        name = f"mlplatform-prod-{identity}"
        policy = next(c for c in got if c["args"] == ["policy", "write", name, "-"])
        assert f'path "secret/data/mlplatform/prod/{identity}"' in policy["stdin"]
        assert "<env>" not in policy["stdin"] and "<kv-mount>" not in policy["stdin"]
        assert [
            "write",
            f"auth/kubernetes/role/{name}",
            f"bound_service_account_names={account}",
            "bound_service_account_namespaces=mlplatform-prod",
            f"token_policies={name}",
            "token_ttl=1h",
            "token_max_ttl=24h",
        ] in argv
        assert f"VAULT_ROLE={name} VAULT_SECRET_PATH=mlplatform/prod/{identity}" in out
    # one policy and one role per identity, nothing else; nothing wider than one service account per role
    assert sorted(a[2] for a in argv if a[:2] == ["policy", "write"]) == sorted(
        f"mlplatform-prod-{i}" for i in IDENTITIES
    )
    assert len([a for a in argv if a[0] == "write" and a[1].startswith("auth/kubernetes/role/")]) == len(
        IDENTITIES
    )
    assert not any("*" in a for args in argv for a in args)


def test_rerun_skips_existing_mounts_and_keeps_existing_secrets(fake_vault):
    tmp, env = fake_vault
    (tmp / "auth.json").write_text('{"kubernetes/": {"type": "kubernetes"}, "token/": {"type": "token"}}')
    (tmp / "secrets.json").write_text('{"kv-ml/": {"type": "kv", "options": {"version": "2"}}}')
    seed = tmp / "seed"
    seed.mkdir()
    (seed / "feature-store.json").write_text('{"REDIS_PASSWORD": "s3cret-value"}')
    out = run(["--env", "dev", "--kv-mount", "kv-ml", "--seed-dir", str(seed)], env).stdout
    argv = [c["args"] for c in calls(tmp)]
    assert not any(a[:2] == ["auth", "enable"] for a in argv)
    assert not any(a[:2] == ["secrets", "enable"] for a in argv)
    put = [a for a in argv if a[:2] == ["kv", "put"]]
    assert put == [
        ["kv", "put", "-mount=kv-ml", "mlplatform/dev/feature-store", f"@{seed}/feature-store.json"]
    ]
    assert "s3cret-value" not in json.dumps(argv) and "s3cret-value" not in out
    # second run: the secret now exists and is left alone
    (tmp / "exists").write_text("")
    shutil.rmtree(tmp / "calls")
    out = run(["--env", "dev", "--kv-mount", "kv-ml", "--seed-dir", str(seed)], env).stdout
    assert not any(c["args"][:2] == ["kv", "put"] for c in calls(tmp))
    assert "exists; left as is" in out


def test_dry_run_prints_commands_without_calling_vault(fake_vault):
    tmp, env = fake_vault
    out = run(["--env", "staging", "--audience", "vault", "--dry-run"], env).stdout
    assert calls(tmp) == []
    assert "+ vault auth enable -path=kubernetes kubernetes" in out
    assert out.count("+ vault policy write mlplatform-staging-") == len(IDENTITIES) == 5
    assert "bound_service_account_namespaces=mlplatform-staging" in out and "audience=vault" in out
    assert (
        "+ vault write auth/kubernetes/role/mlplatform-staging-retrain "
        "bound_service_account_names=drift-detection-retrain "
    ) in out
    assert 'path "secret/data/mlplatform/staging/retrain"' in out


def test_every_policy_template_is_installed():
    """policies/vault/*.hcl and the script's identities are the same set: no policy left uninstalled."""
    assert {p.stem for p in (REPO / "policies" / "vault").glob("*.hcl")} == set(IDENTITIES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "qa"], "--env must be dev, staging or prod"),
        (["--env", "prod", "--bogus"], "unknown argument: --bogus"),
        (["--env", "prod", "--seed-dir", "{tmp}/no-such-dir"], "is not a directory"),
    ],
)
def test_bad_arguments_fail_clearly(fake_vault, args, message):
    tmp, env = fake_vault
    proc = run([a.format(tmp=tmp) for a in args], env, check=False)
    assert proc.returncode == 2 and message in proc.stderr


def test_unreachable_or_sealed_vault_stops_the_script(fake_vault):
    tmp, env = fake_vault
    (tmp / "sealed").write_text("")
    proc = run(["--env", "prod"], env, check=False)
    assert proc.returncode == 2 and "unreachable or sealed" in proc.stderr
    assert [c["args"][0] for c in calls(tmp)] == ["status"]


@pytest.mark.parametrize("identity", IDENTITIES)
def test_identity_policy_is_least_privilege(identity):
    text = (REPO / "policies" / "vault" / f"{identity}.hcl").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    paths = re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', code)
    assert paths == [(f"<kv-mount>/data/mlplatform/<env>/{identity}", '"read"')]
    assert code.count("path ") == 1


def test_drift_database_url_is_one_key_of_the_drift_secret(fake_vault):
    """--drift-database-url-file sets DRIFT_DATABASE_URL of mlplatform/<env>/drift-detection from a file:
    created when missing, only that key patched when the secret exists; the DSN never on argv."""
    tmp, env = fake_vault
    dsn = tmp / "dsn"
    dsn.write_text("postgresql://mlplatform:s3cret-pw@mlplatform-pg-rw.mlplatform-prod:5432/mlplatform")
    out = run(["--env", "prod", "--drift-database-url-file", str(dsn)], env).stdout
    argv = [c["args"] for c in calls(tmp)]
    assert [
        "kv",
        "put",
        "-mount=secret",
        "mlplatform/prod/drift-detection",
        f"DRIFT_DATABASE_URL=@{dsn}",
    ] in argv
    assert "DRIFT_DATABASE_URL of secret/mlplatform/prod/drift-detection" in out
    (tmp / "exists").write_text("")
    shutil.rmtree(tmp / "calls")
    run(["--env", "prod", "--drift-database-url-file", str(dsn)], env)
    argv = [c["args"] for c in calls(tmp)]
    assert [
        "kv",
        "patch",
        "-mount=secret",
        "mlplatform/prod/drift-detection",
        f"DRIFT_DATABASE_URL=@{dsn}",
    ] in argv
    assert not any(a[:2] == ["kv", "put"] for a in argv)
    assert "s3cret-pw" not in json.dumps(argv) and "s3cret-pw" not in out
    proc = run(["--env", "prod", "--drift-database-url-file", str(tmp / "missing")], env, check=False)
    assert proc.returncode == 2 and "is not a file" in proc.stderr


def test_feature_database_url_is_one_key_of_the_feature_store_and_retrain_secrets(fake_vault):
    """--feature-database-url-file sets FEATURES_DATABASE_URL of mlplatform/<env>/feature-store and of
    mlplatform/<env>/retrain (the retraining Job's training rows) the same way (put when missing, patch
    when present, the URL only in the file); together with the drift one."""
    tmp, env = fake_vault
    url = tmp / "features-url"
    url.write_text("postgresql://mlplatform:f34t-pw@mlplatform-pg-rw.mlplatform-prod:5432/mlplatform")
    dsn = tmp / "drift-url"
    dsn.write_text("postgresql://mlplatform:dr1ft-pw@mlplatform-pg-rw.mlplatform-prod:5432/mlplatform")
    args = ["--env", "prod", "--feature-database-url-file", str(url), "--drift-database-url-file", str(dsn)]
    out = run(args, env).stdout
    argv = [c["args"] for c in calls(tmp)]
    for identity in ("feature-store", "retrain"):
        assert [
            "kv",
            "put",
            "-mount=secret",
            f"mlplatform/prod/{identity}",
            f"FEATURES_DATABASE_URL=@{url}",
        ] in argv
        assert f"{identity}: FEATURES_DATABASE_URL of secret/mlplatform/prod/{identity}" in out
    assert [
        "kv",
        "put",
        "-mount=secret",
        "mlplatform/prod/drift-detection",
        f"DRIFT_DATABASE_URL=@{dsn}",
    ] in argv
    # the drift DSN goes to drift-detection only
    drift = [a[3] for a in argv if a[:2] == ["kv", "put"] and a[4].startswith("DRIFT_DATABASE_URL=")]
    assert drift == ["mlplatform/prod/drift-detection"]
    (tmp / "exists").write_text("")
    shutil.rmtree(tmp / "calls")
    run(["--env", "prod", "--feature-database-url-file", str(url)], env)
    argv = [c["args"] for c in calls(tmp)]
    for identity in ("feature-store", "retrain"):
        assert [
            "kv",
            "patch",
            "-mount=secret",
            f"mlplatform/prod/{identity}",
            f"FEATURES_DATABASE_URL=@{url}",
        ] in argv
    assert not any(a[:2] == ["kv", "put"] for a in argv)
    assert "f34t-pw" not in json.dumps(argv) and "f34t-pw" not in out
    proc = run(["--env", "prod", "--feature-database-url-file", str(tmp / "missing")], env, check=False)
    assert (
        proc.returncode == 2
        and "--feature-database-url-file" in proc.stderr
        and "is not a file" in proc.stderr
    )
