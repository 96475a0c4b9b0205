"""VaultSecretsBackend against a real OpenBao server (``bao server -dev``, tests/openbao.py).

OpenBao is set up by scripts/vault-bootstrap.sh with the project's HCL policies; Kubernetes auth
asks a TokenReview double (the only double: no API server runs here). The backend's schedule runs
on an injected clock where a test drives it; token TTLs, renewals, revocation and sealing are
OpenBao's own.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import hvac
import pytest

from mlplatform.core.secrets import SecretsBackend, build_secrets_backend
from mlplatform.core.vault import VaultConfig, VaultSecretsBackend, VaultStartupError
from tests.openbao import IDENTITIES, OpenBao
from tests.procs import free_port
from tests.unit.security.conftest import NAMESPACE, OTHER_PATH, ROLE, SECRET_PATH, VALUES


def make(config: VaultConfig, clock, **kw) -> VaultSecretsBackend:
    return VaultSecretsBackend(config, clock=clock, start_thread=False, **kw)


def version(vault: OpenBao, path: str = SECRET_PATH) -> int:
    meta = vault.client().secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")
    return int(meta["data"]["current_version"])


def test_login_with_service_account_token_and_kv2_read(config, vault, clock):
    reviews = vault.kube.reviews
    backend = make(config, clock)
    try:
        assert isinstance(backend, SecretsBackend)
        assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
        assert backend.get("MLFLOW_TRACKING_PASSWORD") == "mlf-v1"
        assert backend.get("NOT_THERE") is None
        assert vault.kube.reviews == reviews + 1  # OpenBao asked the API server about the JWT
        assert backend.stats.logins == 1 and backend.stats.reads == 1
        assert backend.stats.versions == {SECRET_PATH: version(vault)}
        # the bootstrap script's role: token_ttl=1h
        assert 3590 <= backend.token_expires_in() <= 3600
        info = backend._client.auth.token.lookup_self()["data"]
        assert info["policies"] == ["default", ROLE]
        assert info["meta"]["service_account_name"] == "model-serving"
        assert info["meta"]["service_account_namespace"] == NAMESPACE
    finally:
        backend.close()


@pytest.mark.parametrize("env", ["dev", "prod"])
@pytest.mark.parametrize("identity", IDENTITIES)
def test_each_identity_reads_only_its_own_secret(openbao, tmp_path, env, identity):
    """Least privilege, as bootstrapped: each role reads its own path and is denied every other
    identity's path in its environment, and its own identity's path in the other environment."""
    for other in IDENTITIES:
        for e in ("dev", "prod"):
            openbao.put(f"mlplatform/{e}/{other}", {"OWNER": f"{e}/{other}"})
    jwt = openbao.kube.mint(f"mlplatform-{env}", IDENTITIES[identity])
    client = hvac.Client(url=openbao.addr, timeout=5)
    client.auth.kubernetes.login(role=f"mlplatform-{env}-{identity}", jwt=jwt)
    kv = client.secrets.kv.v2
    own = kv.read_secret_version(path=f"mlplatform/{env}/{identity}", mount_point="secret")
    assert own["data"]["data"] == {"OWNER": f"{env}/{identity}"}
    denied = [f"mlplatform/{env}/{other}" for other in IDENTITIES if other != identity]
    denied.append(f"mlplatform/{'prod' if env == 'dev' else 'dev'}/{identity}")
    for path in denied:
        with pytest.raises(hvac.exceptions.Forbidden):
            kv.read_secret_version(path=path, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):  # read only: no writes to its own secret
        kv.create_or_update_secret(
            path=f"mlplatform/{env}/{identity}", secret={"x": "y"}, mount_point="secret"
        )
    with pytest.raises(hvac.exceptions.Forbidden):  # nor listing
        kv.list_secrets(path=f"mlplatform/{env}", mount_point="secret")


@pytest.mark.parametrize(
    ("namespace", "account", "why"),
    [
        ("mlplatform-dev", "feature-store", "service account name not authorized"),
        ("mlplatform-prod", "model-serving", "namespace not authorized"),
    ],
)
def test_role_refuses_other_service_accounts(openbao, namespace, account, why):
    client = hvac.Client(url=openbao.addr, timeout=5)
    with pytest.raises(hvac.exceptions.Forbidden, match=why):
        client.auth.kubernetes.login(role=ROLE, jwt=openbao.kube.mint(namespace, account))


def test_token_the_api_server_rejects_cannot_log_in(openbao):
    jwt = openbao.kube.mint(NAMESPACE, "model-serving")
    openbao.kube.revoke(jwt)
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=openbao.addr, timeout=5).auth.kubernetes.login(role=ROLE, jwt=jwt)


def test_several_paths_later_ones_win(config, vault, clock, sa_token):
    vault.client().sys.create_or_update_policy(
        "test-two-paths",
        'path "secret/data/mlplatform/dev/shared" { capabilities = ["read"] }\n'
        f'path "secret/data/{SECRET_PATH}" {{ capabilities = ["read"] }}\n',
    )
    vault.role("test-two-paths", ["test-two-paths"], "model-serving", NAMESPACE)
    vault.put("mlplatform/dev/shared", {"REDIS_PASSWORD": "shared", "API": "k"})
    cfg = dataclasses.replace(
        config, role="test-two-paths", secret_paths=("mlplatform/dev/shared", SECRET_PATH)
    )
    backend = make(cfg, clock)
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
    assert backend.get("API") == "k"
    backend.close()


def test_rotated_value_served_after_the_refresh_interval_and_listeners_get_names(config, vault, clock):
    backend = make(config, clock)
    seen: list[frozenset[str]] = []
    backend.add_listener(seen.append)
    v2 = vault.put(SECRET_PATH, {**VALUES, "REDIS_PASSWORD": "r3dis-v2"})

    clock.advance(30)
    backend.tick()
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"  # not due yet
    assert seen == []

    clock.advance(31)
    backend.tick()
    assert backend.get("REDIS_PASSWORD") == "r3dis-v2"
    assert seen == [frozenset({"REDIS_PASSWORD"})]
    assert backend.stats.rotations == 1
    assert backend.stats.versions == {SECRET_PATH: v2}

    clock.advance(61)
    backend.tick()  # re-read, nothing changed: no notification
    assert seen == [frozenset({"REDIS_PASSWORD"})]
    assert backend.stats.reads == 3
    backend.close()


def test_removed_key_is_reported_and_disappears(config, vault, clock):
    backend = make(config, clock)
    seen: list[frozenset[str]] = []
    backend.add_listener(seen.append)
    vault.put(SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v1"})
    clock.advance(61)
    backend.tick()
    assert backend.get("MLFLOW_TRACKING_PASSWORD") is None
    assert seen == [frozenset({"MLFLOW_TRACKING_PASSWORD"})]
    backend.close()


def test_token_renewed_before_expiry(config, vault, clock):
    backend = make(config, clock)  # token_ttl 1h: renewed after 2/3 of the lease
    token = backend._client.token
    clock.advance(2000)
    backend.tick()
    assert backend.stats.renewals == 0
    clock.advance(500)  # t=2500 > 2400
    backend.tick()
    assert backend.stats.renewals == 1 and backend.stats.logins == 1
    assert backend._client.token == token  # the same token, renewed by OpenBao
    info = backend._client.auth.token.lookup_self()["data"]
    assert info["last_renewal_time"] is not None and info["ttl"] > 3500
    clock.advance(100)
    backend.tick()
    assert backend.stats.read_failures == 0
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
    backend.close()


def test_logs_in_again_when_renewal_hits_max_ttl(config, vault):
    """Real time: token_ttl = token_max_ttl = 6s, renewal at half the lease. OpenBao caps the
    renewals by the max TTL (3 s, then 2 s left); once a renewal grants less than half the login's
    lease the backend logs in again, before the token runs out: it never holds an expired token."""
    vault.role("test-max-ttl", [ROLE], "model-serving", NAMESPACE, ttl="6s", max_ttl="6s")
    cfg = dataclasses.replace(config, role="test-max-ttl", renew_fraction=0.5)
    backend = make(cfg, time.monotonic)
    first = backend._client.token
    deadline = time.monotonic() + 10
    while backend.stats.logins < 2:
        assert time.monotonic() < deadline, f"no new login: {backend.stats}"
        time.sleep(0.1)
        backend.tick()
        backend._client.auth.token.lookup_self()  # the token in use is always valid (403 otherwise)
    assert backend.stats.renewals >= 1  # renewed while the cap allowed a useful lease
    assert backend._client.token != first
    assert backend.stats.read_failures == 0 and backend.stats.login_failures == 0
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
    backend.close()


def test_expired_token_is_replaced_by_a_new_login(config, vault):
    vault.role("test-short", [ROLE], "model-serving", NAMESPACE, ttl="2s", max_ttl="2s")
    backend = make(dataclasses.replace(config, role="test-short", refresh_interval_s=0.5), time.monotonic)
    stale = hvac.Client(url=vault.addr, token=backend._client.token)
    vault.put(SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v2"})
    time.sleep(2.2)
    with pytest.raises(hvac.exceptions.Forbidden):  # OpenBao expired it
        stale.auth.token.lookup_self()
    backend.tick()
    assert backend.stats.logins == 2
    assert backend.get("REDIS_PASSWORD") == "r3dis-v2"
    backend.close()


def test_revoked_token_renewal_failure_falls_back_to_login(config, vault, clock):
    backend = make(config, clock)
    vault.revoke_logins()
    clock.advance(2500)
    backend.tick()
    assert backend.stats.logins == 2
    assert backend.stats.read_failures == 0
    backend.close()


def test_reread_denied_by_revoked_token_logs_in_again(config, vault, clock):
    backend = make(config, clock)
    vault.revoke_logins()  # revoked before its renewal time
    clock.advance(61)
    backend.tick()
    assert backend.stats.read_failures == 1 and backend.get("REDIS_PASSWORD") == "r3dis-v1"
    vault.put(SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v2"})
    clock.advance(11)
    backend.tick()
    assert backend.stats.logins == 2
    assert backend.get("REDIS_PASSWORD") == "r3dis-v2"
    backend.close()


def test_failed_reread_keeps_last_values_then_recovers(config, vault, clock, caplog):
    backend = make(config, clock)
    vault.seal()
    try:
        clock.advance(61)
        with caplog.at_level(logging.WARNING, logger="mlplatform.vault"):
            backend.tick()
        assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
        assert backend.stats.read_failures == 1
        assert "sealed" in caplog.text.lower()
    finally:
        vault.unseal()
    vault.put(SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v3"})
    clock.advance(11)  # retried sooner than the full interval after a failure
    backend.tick()
    assert backend.get("REDIS_PASSWORD") == "r3dis-v3"
    backend.close()


def test_background_thread_picks_up_rotation_without_restart(config, vault):
    cfg = dataclasses.replace(config, refresh_interval_s=0.2)
    backend = VaultSecretsBackend(cfg, tick_interval_s=0.05)  # real clock, real thread
    try:
        vault.put(SECRET_PATH, {"REDIS_PASSWORD": "rotated"})
        deadline = time.monotonic() + 10
        while backend.get("REDIS_PASSWORD") != "rotated" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert backend.get("REDIS_PASSWORD") == "rotated"
    finally:
        backend.close()
    assert backend._thread is None


# -- fail-fast start-up ------------------------------------------------------------------------


def _startup_error(config, clock) -> str:
    with pytest.raises(VaultStartupError) as info:
        make(config, clock)
    return str(info.value)


def test_startup_fails_clearly_when_vault_unreachable(config, clock):
    msg = _startup_error(dataclasses.replace(config, addr=f"http://127.0.0.1:{free_port()}"), clock)
    assert "unreachable" in msg and f"role '{ROLE}'" in msg


def test_startup_fails_clearly_on_unknown_role(config, clock):
    msg = _startup_error(dataclasses.replace(config, role="no-such-role"), clock)
    assert "rejected the login" in msg and 'invalid role name "no-such-role"' in msg
    assert "service account" in msg


def test_startup_fails_when_service_account_not_bound_to_role(config, clock, vault, sa_token):
    sa_token.write_text(vault.kube.mint(NAMESPACE, "feature-store"))
    msg = _startup_error(config, clock)
    assert "rejected the login" in msg and "service account name not authorized" in msg


def test_startup_fails_when_sealed(config, vault, clock):
    vault.seal()
    try:
        assert "sealed" in _startup_error(config, clock)
    finally:
        vault.unseal()


def test_startup_fails_when_policy_denies_the_path(config, clock):
    msg = _startup_error(dataclasses.replace(config, secret_paths=(OTHER_PATH,)), clock)
    assert "may not read" in msg and "permission denied" in msg and OTHER_PATH in msg


def test_startup_fails_when_secret_missing(config, vault, clock):
    vault.client().secrets.kv.v2.delete_metadata_and_all_versions(path=SECRET_PATH, mount_point="secret")
    msg = _startup_error(config, clock)
    assert "no KV v2 secret" in msg and SECRET_PATH in msg


def test_startup_fails_without_service_account_token(config, clock, tmp_path):
    msg = _startup_error(dataclasses.replace(config, token_path=tmp_path / "absent"), clock)
    assert "service-account token" in msg and "absent" in msg


def test_secret_values_never_logged(config, vault, clock, caplog, sa_token):
    with caplog.at_level(logging.DEBUG):
        backend = make(config, clock)
        vault.put(SECRET_PATH, {**VALUES, "REDIS_PASSWORD": "r3dis-v2"})
        clock.advance(61)
        backend.tick()
        vault.seal()
        try:
            clock.advance(61)
            backend.tick()
        finally:
            vault.unseal()
        token = backend._client.token
        backend.close()
    assert "REDIS_PASSWORD" in caplog.text  # names are logged on rotation ...
    for value in ("r3dis-v1", "r3dis-v2", "mlf-v1", sa_token.read_text(), token):
        assert value not in caplog.text  # ... values, the SA token and the Vault token never
    assert not any(t.startswith(("hvs.", "s.")) for t in caplog.text.split())


# -- configuration from the environment --------------------------------------------------------


def test_from_env_defaults_and_missing_variables(vault, sa_token, clock):
    with pytest.raises(VaultStartupError) as info:
        VaultConfig.from_env({"VAULT_ADDR": vault.addr})
    assert "VAULT_ROLE" in str(info.value) and "VAULT_SECRET_PATH" in str(info.value)

    env = {
        "VAULT_ADDR": vault.addr + "/",
        "VAULT_ROLE": ROLE,
        "VAULT_SECRET_PATH": f"/{SECRET_PATH}/",
        "VAULT_SA_TOKEN_PATH": str(sa_token),
    }
    cfg = VaultConfig.from_env(env)
    assert (cfg.auth_path, cfg.kv_mount, cfg.secret_paths) == ("kubernetes", "secret", (SECRET_PATH,))
    assert VaultConfig.from_env(
        {k: v for k, v in env.items() if k != "VAULT_SA_TOKEN_PATH"}
    ).token_path.as_posix() == ("/var/run/secrets/kubernetes.io/serviceaccount/token")
    backend = VaultSecretsBackend.from_env(env, clock=clock, start_thread=False)
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
    backend.close()


def test_secret_path_defaults_to_env_and_service_name(vault):
    env = {
        "VAULT_ADDR": vault.addr,
        "VAULT_ROLE": "r",
        "MLPLATFORM_ENV": "prod",
        "OTEL_SERVICE_NAME": "model-serving",
    }
    assert VaultConfig.from_env(env).secret_paths == ("mlplatform/prod/model-serving",)
    env["VAULT_SECRET_PATH"] = "a, b/c"
    assert VaultConfig.from_env(env).secret_paths == ("a", "b/c")


def test_custom_auth_path_and_kv_mount(vault, sa_token, clock):
    root = vault.client()
    if "k8s-alt/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("kubernetes", path="k8s-alt")
        root.write_data(
            "auth/k8s-alt/config",
            data={
                "kubernetes_host": vault.kube.url,
                "kubernetes_ca_cert": vault.kube.ca_pem(),
                "disable_local_ca_jwt": True,
            },
        )
    if "kv-ml/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("kv", path="kv-ml", options={"version": "2"})
    root.sys.create_or_update_policy("test-kv-ml", 'path "kv-ml/data/svc" { capabilities = ["read"] }')
    vault.role("test-kv-ml", ["test-kv-ml"], "model-serving", NAMESPACE, auth_path="k8s-alt")
    vault.put("svc", {"X": "1"}, mount="kv-ml")
    cfg = VaultConfig(
        addr=vault.addr,
        role="test-kv-ml",
        secret_paths=("svc",),
        auth_path="k8s-alt",
        kv_mount="kv-ml",
        token_path=sa_token,
    )
    backend = make(cfg, clock)
    assert backend.get("X") == "1"
    assert backend._client.auth.token.lookup_self()["data"]["path"] == "auth/k8s-alt/login"
    backend.close()


def test_build_secrets_backend_vault_fails_fast(monkeypatch, vault, sa_token):
    monkeypatch.setenv("VAULT_ADDR", vault.addr)
    monkeypatch.setenv("VAULT_ROLE", "wrong")
    monkeypatch.setenv("VAULT_SECRET_PATH", SECRET_PATH)
    monkeypatch.setenv("VAULT_SA_TOKEN_PATH", str(sa_token))
    with pytest.raises(VaultStartupError, match="rejected the login"):
        build_secrets_backend("vault")
    monkeypatch.setenv("VAULT_ROLE", ROLE)
    backend = build_secrets_backend("vault")
    try:
        assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
    finally:
        backend.close()


def test_role_with_short_ttl_from_lookup_self(config, vault, clock):
    vault.role("test-30s", [ROLE], "model-serving", NAMESPACE, ttl="30s", max_ttl="1h")
    backend = make(dataclasses.replace(config, role="test-30s", refresh_interval_s=5), clock)
    assert 28 <= backend.token_expires_in() <= 30
    clock.advance(21)
    backend.tick()
    assert backend.stats.renewals == 1
    backend.close()


def test_metrics_show_staleness_and_failures_while_vault_is_sealed(config, vault, clock):
    from prometheus_client import CollectorRegistry, generate_latest

    from mlplatform.core.secrets import register_secrets_metrics

    backend = make(config, clock)
    registry = CollectorRegistry(auto_describe=True)
    register_secrets_metrics(registry, backend)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels or None)

    first = sample("mlplatform_secrets_last_refresh_timestamp_seconds")
    assert first is not None and abs(first - time.time()) < 30
    assert sample("mlplatform_secrets_refresh_interval_seconds") == 60.0
    assert sample("mlplatform_vault_logins_total") == 1
    vault.seal()
    try:
        clock.advance(61)
        backend.tick()
        clock.advance(11)
        backend.tick()
    finally:
        vault.unseal()
    assert sample("mlplatform_secrets_refresh_failures_total", stage="read") == 2
    assert sample("mlplatform_secrets_last_refresh_timestamp_seconds") == first  # stale
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"  # the last good value kept
    clock.advance(11)
    backend.tick()
    assert sample("mlplatform_secrets_last_refresh_timestamp_seconds") > first
    text = generate_latest(registry).decode()
    assert "r3dis-v1" not in text and "mlf-v1" not in text
    backend.close()


def test_env_backend_registers_no_vault_metrics():
    from prometheus_client import CollectorRegistry

    from mlplatform.core.secrets import EnvSecretsBackend, register_secrets_metrics

    registry = CollectorRegistry()
    register_secrets_metrics(registry, EnvSecretsBackend({}))
    assert registry.get_sample_value("mlplatform_secrets_last_refresh_timestamp_seconds") is None


async def test_outbound_feature_store_keys_follow_rotation(config, vault, clock):
    """serving's and explain's feature-store clients (built by the one builder both apps use, from each
    service's settings) send the rotated key after the next re-read, without a restart; the env backend
    cannot notify."""
    from prometheus_client import CollectorRegistry

    from mlplatform.core.secrets import EnvSecretsBackend, follow_secret
    from mlplatform.explain.settings import ExplainSettings
    from mlplatform.features.client import build_feature_client
    from mlplatform.serving.settings import ServingSettings

    vault.put(
        SECRET_PATH, {"SERVING_FEATURE_STORE_API_KEY": "fs-v1", "EXPLAIN_FEATURE_STORE_API_KEY": "ex-v1"}
    )
    backend = make(config, clock)
    url = "http://127.0.0.1:1"
    serving = build_feature_client(ServingSettings(feature_store_url=url), backend, CollectorRegistry())
    explain = build_feature_client(ExplainSettings(feature_store_url=url), backend, CollectorRegistry())
    assert serving._client.headers["Authorization"] == "Bearer fs-v1"
    assert explain._client.headers["Authorization"] == "Bearer ex-v1"
    vault.put(
        SECRET_PATH, {"SERVING_FEATURE_STORE_API_KEY": "fs-v2", "EXPLAIN_FEATURE_STORE_API_KEY": "ex-v2"}
    )
    clock.advance(61)
    backend.tick()
    assert serving._client.headers["Authorization"] == "Bearer fs-v2"
    assert explain._client.headers["Authorization"] == "Bearer ex-v2"
    vault.put(SECRET_PATH, {"EXPLAIN_FEATURE_STORE_API_KEY": "ex-v2"})  # serving's key removed
    clock.advance(61)
    backend.tick()
    assert "Authorization" not in serving._client.headers
    await serving._client.aclose()
    await explain._client.aclose()
    backend.close()
    assert follow_secret(EnvSecretsBackend({}), "X", lambda v: None) is False


def test_malformed_rotated_value_is_refused_counted_and_never_logged(config, vault, clock, caplog):
    """Bad input: a malformed keyring written to Vault is one error line (no value), a metric, and
    the previous keys stay in force."""
    from prometheus_client import CollectorRegistry

    from mlplatform.core.auth import ApiKeyAuth, hash_key
    from mlplatform.core.secrets import register_secrets_metrics

    good = f"{hash_key('k-good')}:infer"
    vault.put(SECRET_PATH, {**VALUES, "MLPLATFORM_API_KEYS": good})
    backend = make(config, clock)
    registry = CollectorRegistry()
    register_secrets_metrics(registry, backend)
    auth = ApiKeyAuth(backend, "MLPLATFORM_API_KEYS", enabled=True)
    assert auth.scopes_for("k-good") == frozenset({"infer"})
    vault.put(SECRET_PATH, {**VALUES, "MLPLATFORM_API_KEYS": "not-a-sha256-digest-s3cr3t:infer"})
    clock.advance(61)
    with caplog.at_level(logging.INFO):
        backend.tick()
    assert auth.scopes_for("k-good") == frozenset({"infer"})  # last good keyring kept
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "rejected, keeping the previous keys" in errors[0].getMessage()
    assert "s3cr3t" not in caplog.text
    assert (
        registry.get_sample_value("mlplatform_secrets_rejected_total", {"secret": "MLPLATFORM_API_KEYS"}) == 1
    )
    backend.close()
