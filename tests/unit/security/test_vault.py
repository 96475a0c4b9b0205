"""VaultSecretsBackend against an HTTP test double of the Vault API.

No Vault server can run here, so ``tests/unit/security/fake_vault.py`` serves the paths the backend
uses over real HTTP with the JSON shapes of Vault's API documentation (Kubernetes auth login, KV v2
read with ``data``/``metadata.version``, token lookup-self/renew-self, ``{"errors": [...]}`` for 400,
403 permission denied and 503 sealed). Token expiry and re-read schedules run on an injected clock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import pytest

from mlplatform.core.secrets import SecretsBackend, build_secrets_backend
from mlplatform.core.vault import VaultConfig, VaultSecretsBackend, VaultStartupError
from tests.procs import free_port
from tests.unit.security.conftest import OTHER_JWT, SA_JWT, SECRET_PATH
from tests.unit.security.fake_vault import Role


def make(config: VaultConfig, clock, **kw) -> VaultSecretsBackend:
    return VaultSecretsBackend(config, clock=clock, start_thread=False, **kw)


def test_login_with_service_account_token_and_kv2_read(config, vault, clock):
    backend = make(config, clock)
    try:
        assert isinstance(backend, SecretsBackend)
        assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
        assert backend.get("MLFLOW_TRACKING_PASSWORD") == "mlf-v1"
        assert backend.get("NOT_THERE") is None
        login_body = json.loads(vault.state.bodies[0])
        assert login_body == {"role": "model-serving", "jwt": SA_JWT}
        assert vault.state.count("POST", "/v1/auth/kubernetes/login") == 1
        assert vault.state.count("GET", "/v1/auth/token/lookup-self") == 1
        assert vault.state.count("GET", f"/v1/secret/data/{SECRET_PATH}") == 1
        assert backend.stats.versions == {SECRET_PATH: 1}
        assert backend.token_expires_in() == pytest.approx(300)
    finally:
        backend.close()


def test_several_paths_later_ones_win(config, vault, clock):
    vault.state.put_secret("secret", "mlplatform/shared", {"REDIS_PASSWORD": "shared", "API": "k"})
    backend = make(dataclasses.replace(config, secret_paths=("mlplatform/shared", SECRET_PATH)), clock)
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
    assert backend.get("API") == "k"
    backend.close()


def test_rotated_value_served_after_the_refresh_interval_and_listeners_get_names(config, vault, clock):
    backend = make(config, clock)
    seen: list[frozenset[str]] = []
    backend.add_listener(seen.append)
    vault.state.put_secret(
        "secret", SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v2", "MLFLOW_TRACKING_PASSWORD": "mlf-v1"}
    )

    clock.advance(30)
    backend.tick()
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"  # not due yet
    assert seen == []

    clock.advance(31)
    backend.tick()
    assert backend.get("REDIS_PASSWORD") == "r3dis-v2"
    assert seen == [frozenset({"REDIS_PASSWORD"})]
    assert backend.stats.rotations == 1
    assert backend.stats.versions == {SECRET_PATH: 2}

    clock.advance(61)
    backend.tick()  # re-read, nothing changed: no notification
    assert seen == [frozenset({"REDIS_PASSWORD"})]
    assert vault.state.count("GET", f"/v1/secret/data/{SECRET_PATH}") == 3
    backend.close()


def test_removed_key_is_reported_and_disappears(config, vault, clock):
    backend = make(config, clock)
    seen: list[frozenset[str]] = []
    backend.add_listener(seen.append)
    vault.state.put_secret("secret", SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v1"})
    clock.advance(61)
    backend.tick()
    assert backend.get("MLFLOW_TRACKING_PASSWORD") is None
    assert seen == [frozenset({"MLFLOW_TRACKING_PASSWORD"})]


def test_token_renewed_before_expiry(config, vault, clock):
    backend = make(config, clock)  # role ttl 300s: renew after 2/3 of the lease
    clock.advance(150)
    backend.tick()
    assert vault.state.count("POST", "/v1/auth/token/renew-self") == 0
    clock.advance(60)  # t=210 > 200
    backend.tick()
    assert vault.state.count("POST", "/v1/auth/token/renew-self") == 1
    assert backend.stats.renewals == 1
    assert backend.token_expires_in() == pytest.approx(300)
    assert vault.state.count("POST", "/v1/auth/kubernetes/login") == 1
    # the renewed token still reads
    clock.advance(100)
    backend.tick()
    assert backend.stats.read_failures == 0
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"


def test_logs_in_again_when_renewal_hits_max_ttl(config, vault, clock):
    vault.state.roles["model-serving"].max_ttl = 320
    backend = make(config, clock)
    clock.advance(201)
    backend.tick()  # renewed, capped at 119s left
    assert backend.stats.renewals == 1
    assert backend.token_expires_in() == pytest.approx(119)
    clock.advance(80)
    backend.tick()  # renewal would leave 39s < refresh interval: new login instead
    assert vault.state.count("POST", "/v1/auth/token/renew-self") == 2
    assert backend.stats.logins == 2
    assert backend.token_expires_in() == pytest.approx(300)


def test_expired_token_is_replaced_by_a_new_login(config, vault, clock):
    backend = make(config, clock)
    vault.state.put_secret("secret", SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v2"})
    clock.advance(10_000)  # no ticks for longer than the lease: the token is dead
    backend.tick()
    assert vault.state.count("POST", "/v1/auth/token/renew-self") == 0
    assert backend.stats.logins == 2
    assert backend.get("REDIS_PASSWORD") == "r3dis-v2"


def test_revoked_token_renewal_failure_falls_back_to_login(config, vault, clock):
    backend = make(config, clock)
    vault.state.tokens.clear()  # revoked server-side
    clock.advance(210)
    backend.tick()
    assert backend.stats.logins == 2
    assert backend.stats.read_failures == 0


def test_reread_denied_by_revoked_token_logs_in_again(config, vault, clock):
    backend = make(config, clock)
    vault.state.tokens.clear()  # Vault lost or revoked the token before its renewal time
    clock.advance(61)
    backend.tick()
    assert backend.stats.read_failures == 1 and backend.get("REDIS_PASSWORD") == "r3dis-v1"
    vault.state.put_secret("secret", SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v2"})
    clock.advance(11)
    backend.tick()
    assert backend.stats.logins == 2
    assert backend.get("REDIS_PASSWORD") == "r3dis-v2"


def test_failed_reread_keeps_last_values_then_recovers(config, vault, clock, caplog):
    backend = make(config, clock)
    vault.state.sealed = True
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="mlplatform.vault"):
        backend.tick()
    assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
    assert backend.stats.read_failures == 1
    assert "sealed" in caplog.text
    vault.state.sealed = False
    vault.state.put_secret("secret", SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v3"})
    clock.advance(11)  # retried sooner than the full interval after a failure
    backend.tick()
    assert backend.get("REDIS_PASSWORD") == "r3dis-v3"


def test_background_thread_picks_up_rotation_without_restart(config, vault):
    cfg = dataclasses.replace(config, refresh_interval_s=0.2)
    backend = VaultSecretsBackend(cfg, tick_interval_s=0.05)  # real clock, real thread
    try:
        vault.state.put_secret("secret", SECRET_PATH, {"REDIS_PASSWORD": "rotated"})
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
    assert "unreachable" in msg and "role 'model-serving'" in msg


def test_startup_fails_clearly_on_unknown_role(config, clock):
    msg = _startup_error(dataclasses.replace(config, role="no-such-role"), clock)
    assert "rejected the login" in msg and 'invalid role name "no-such-role"' in msg
    assert "service account" in msg


def test_startup_fails_when_service_account_not_bound_to_role(config, clock, sa_token):
    sa_token.write_text(OTHER_JWT)
    msg = _startup_error(config, clock)
    assert "rejected the login" in msg and "service account name not authorized" in msg


def test_startup_fails_when_sealed(config, vault, clock):
    vault.state.sealed = True
    assert "sealed" in _startup_error(config, clock)


def test_startup_fails_when_policy_denies_the_path(config, clock):
    msg = _startup_error(dataclasses.replace(config, secret_paths=("mlplatform/feature-store",)), clock)
    assert "may not read" in msg and "permission denied" in msg and "mlplatform/feature-store" in msg


def test_startup_fails_when_secret_missing(config, vault, clock):
    vault.state.secrets.pop(f"secret/{SECRET_PATH}")
    msg = _startup_error(config, clock)
    assert "no KV v2 secret" in msg and SECRET_PATH in msg


def test_startup_fails_without_service_account_token(config, clock, tmp_path):
    msg = _startup_error(dataclasses.replace(config, token_path=tmp_path / "absent"), clock)
    assert "service-account token" in msg and "absent" in msg


def test_secret_values_never_logged(config, vault, clock, caplog):
    with caplog.at_level(logging.DEBUG):
        backend = make(config, clock)
        vault.state.put_secret("secret", SECRET_PATH, {"REDIS_PASSWORD": "r3dis-v2"})
        clock.advance(61)
        backend.tick()
        vault.state.sealed = True
        clock.advance(61)
        backend.tick()
    assert "REDIS_PASSWORD" in caplog.text  # names are logged on rotation ...
    for value in ("r3dis-v1", "r3dis-v2", "mlf-v1", SA_JWT):
        assert value not in caplog.text  # ... values and the SA token never
    assert not any(t.startswith("hvs.") for t in caplog.text.split())


# -- configuration from the environment --------------------------------------------------------


def test_from_env_defaults_and_missing_variables(vault, sa_token, clock):
    with pytest.raises(VaultStartupError) as info:
        VaultConfig.from_env({"VAULT_ADDR": vault.url})
    assert "VAULT_ROLE" in str(info.value) and "VAULT_SECRET_PATH" in str(info.value)

    env = {
        "VAULT_ADDR": vault.url + "/",
        "VAULT_ROLE": "model-serving",
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


def test_secret_path_defaults_to_env_and_service_name(vault, sa_token):
    env = {
        "VAULT_ADDR": vault.url,
        "VAULT_ROLE": "r",
        "MLPLATFORM_ENV": "prod",
        "OTEL_SERVICE_NAME": "model-serving",
    }
    assert VaultConfig.from_env(env).secret_paths == ("mlplatform/prod/model-serving",)
    env["VAULT_SECRET_PATH"] = "a, b/c"
    assert VaultConfig.from_env(env).secret_paths == ("a", "b/c")


def test_custom_auth_path_and_kv_mount(vault, sa_token, clock):
    vault.state.policies["mlplatform-model-serving"].add("kv-ml/data/svc")
    vault.state.put_secret("kv-ml", "svc", {"X": "1"})
    cfg = VaultConfig(
        addr=vault.url,
        role="model-serving",
        secret_paths=("svc",),
        auth_path="k8s-prod",
        kv_mount="kv-ml",
        token_path=sa_token,
    )
    backend = make(cfg, clock)
    assert backend.get("X") == "1"
    assert vault.state.count("POST", "/v1/auth/k8s-prod/login") == 1


def test_build_secrets_backend_vault_fails_fast(monkeypatch, vault, sa_token):
    monkeypatch.setenv("VAULT_ADDR", vault.url)
    monkeypatch.setenv("VAULT_ROLE", "wrong")
    monkeypatch.setenv("VAULT_SECRET_PATH", SECRET_PATH)
    monkeypatch.setenv("VAULT_SA_TOKEN_PATH", str(sa_token))
    with pytest.raises(VaultStartupError, match="rejected the login"):
        build_secrets_backend("vault")
    monkeypatch.setenv("VAULT_ROLE", "model-serving")
    backend = build_secrets_backend("vault")
    try:
        assert backend.get("REDIS_PASSWORD") == "r3dis-v1"
    finally:
        backend.close()


def test_role_with_short_ttl_from_lookup_self(config, vault, clock):
    vault.state.roles["short"] = Role({"model-serving"}, {"mlplatform"}, ["mlplatform-model-serving"], 30, 60)
    backend = make(dataclasses.replace(config, role="short", refresh_interval_s=5), clock)
    assert backend.token_expires_in() == pytest.approx(30)
    clock.advance(21)
    backend.tick()
    assert backend.stats.renewals == 1
