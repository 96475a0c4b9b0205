"""A real service process with ``secrets_backend=vault``: fail-fast start-up and key rotation.

The service talks to the session's real OpenBao server (tests/openbao.py), set up by
scripts/vault-bootstrap.sh: it logs in as ``mlplatform-dev-drift-detection`` with a projected
service-account token (checked by a TokenReview double) and reads ``mlplatform/dev/drift-detection``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from mlplatform.core.auth import hash_key
from tests.integration.security.vault_service import PATH, login_as, seconds_until, serve, service_env
from tests.openbao import OpenBao
from tests.procs import free_port, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture
def vault(openbao: OpenBao) -> Iterator[OpenBao]:
    openbao.put(PATH, {"MLPLATFORM_API_KEYS": f"{hash_key('old-key')}:drift:write"})
    return openbao


@pytest.fixture
def jwt(vault: OpenBao) -> str:
    return vault.kube.mint("mlplatform-dev", "drift-detection")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"VAULT_ROLE": "no-such-role"},
            'rejected the login: InvalidRequest: invalid role name "no-such-role"',
        ),
        ({"VAULT_ADDR": "http://127.0.0.1:{port}"}, "is unreachable: connection refused"),
    ],
)
def test_service_refuses_to_start_with_a_clear_message(vault, jwt, tmp_path, extra, message):
    extra = {k: v.format(port=free_port()) for k, v in extra.items()}
    log = tmp_path / "service.log"
    proc = serve(service_env(vault, tmp_path, jwt, **extra), free_port(), log)
    try:
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, "start-up failure should be one clear line, not a traceback"
    critical = [json.loads(line) for line in output.splitlines() if '"level":"critical"' in line]
    assert critical, "no critical JSON log line before the start-up aborted"
    assert (
        critical[0]["msg"].startswith("cannot start with secrets from Vault")
        and message in critical[0]["msg"]
    )
    assert jwt not in output and hash_key("old-key") not in output


def test_rotated_api_key_takes_effect_without_restart(vault, jwt, tmp_path):
    port = free_port()
    log = tmp_path / "service.log"
    proc = serve(service_env(vault, tmp_path, jwt), port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 120, proc, path="/v2/health/live")

        def status(key: str) -> int:
            return httpx.post(
                f"{url}/v1/records", json={"records": []}, headers={"X-API-Key": key}
            ).status_code

        assert status("old-key") != 401
        assert status("new-key") == 401
        vault.put(PATH, {"MLPLATFORM_API_KEYS": f"{hash_key('new-key')}:drift:write"})
        deadline = time.monotonic() + 30
        while status("new-key") == 401 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status("new-key") != 401
        assert status("old-key") == 401
    finally:
        proc.terminate()
        proc.wait(timeout=40)
    output = log.read_text(errors="replace")
    assert "vault secrets rotated: MLPLATFORM_API_KEYS" in output
    assert output.count("vault login ok") == 1  # no restart, no re-login
    assert jwt not in output and hash_key("new-key") not in output


def test_api_key_rotation_under_steady_load_and_vault_outage(vault, jwt, tmp_path):
    """Inbound API keys rotated in OpenBao while a client sends requests back to back: keyring
    {old} -> {old, new} (clients move to new) -> {new} (old refused). Then Vault is sealed: the
    service keeps the last good keys, counts the failed reads and its last-refresh time stops;
    unsealed, it refreshes again. 0 failed requests throughout; no key or token in the log."""
    port = free_port()
    log = tmp_path / "service.log"
    proc = serve(service_env(vault, tmp_path, jwt), port, log)  # VAULT_REFRESH_INTERVAL_S=0.5
    url = f"http://127.0.0.1:{port}"
    keyring = lambda *keys: ",".join(f"{hash_key(k)}:drift:write" for k in keys)  # noqa: E731
    current = {"key": "old-key"}
    results: list[tuple[str, int]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                key = current["key"]
                r = client.post("/v1/records", json={"records": []}, headers={"X-API-Key": key})
                results.append((key, r.status_code))

    def accepted(key: str) -> bool:
        return (
            httpx.post(f"{url}/v1/records", json={"records": []}, headers={"X-API-Key": key}).status_code
            != 401
        )

    def until(predicate) -> float:  # noqa: ANN001
        return seconds_until(predicate, 20)

    def metric(name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        raise KeyError(name)

    loader = threading.Thread(target=load, daemon=True)
    try:
        wait_ready(url, 120, proc, path="/v2/health/live")
        loader.start()
        until(lambda: len(results) > 20)
        vault.put(PATH, {"MLPLATFORM_API_KEYS": keyring("old-key", "new-key")})
        took_new = until(lambda: accepted("new-key"))
        current["key"] = "new-key"
        vault.put(PATH, {"MLPLATFORM_API_KEYS": keyring("new-key")})
        took_revoke = until(lambda: not accepted("old-key"))
        assert took_new < 5 and took_revoke < 5  # refresh interval 0.5 s + the 1 s refresh tick
        # Vault unreachable (sealed): last good keys stay, failures counted, refresh time stops
        vault.seal()
        try:
            until(lambda: metric("mlplatform_secrets_refresh_failures_total", stage="read") >= 2)
            stale = metric("mlplatform_secrets_last_refresh_timestamp_seconds")
            time.sleep(1.5)
            assert metric("mlplatform_secrets_last_refresh_timestamp_seconds") == stale
            assert accepted("new-key") and not accepted("old-key")
        finally:
            vault.unseal()
        until(lambda: metric("mlplatform_secrets_last_refresh_timestamp_seconds") > stale)
        until(lambda: len(results) > 200)
    finally:
        stop.set()
        loader.join(timeout=30)
        proc.terminate()
        proc.wait(timeout=40)
    failed = [(k, s) for k, s in results if s != 200]
    assert failed == [], f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    assert {k for k, _ in results} == {"old-key", "new-key"}
    output = log.read_text(errors="replace")
    assert output.count("vault secrets rotated: MLPLATFORM_API_KEYS") == 2
    assert "vault secret re-read failed, keeping last values" in output
    for secret in (jwt, hash_key("old-key"), hash_key("new-key"), "old-key", "new-key"):
        assert secret not in output
    print(
        f"rotation under load: {len(results)} requests, 0 failed; new key accepted after {took_new:.2f}s, "
        f"old refused after {took_revoke:.2f}s (refresh interval 0.5 s)"
    )


async def test_outbound_drift_key_rotation_under_load(vault, jwt, tmp_path):
    """serving -> drift-detection key rotated in OpenBao while serving's payload logger (its real
    HTTP client, built by serving's own ``_payload_logger``) posts back to back to a real
    drift-detection: drift's keyring {k1} -> {k1, k2}; serving's SERVING_DRIFT_API_KEY k1 -> k2
    (followed without a restart); drift's keyring -> {k2} (k1 refused). 0 failed requests."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from mlplatform.serving.dataplane import _payload_logger
    from mlplatform.serving.settings import ServingSettings

    serving_path = "mlplatform/dev/model-serving"
    keyring = lambda *keys: ",".join(f"{hash_key(k)}:drift:write" for k in keys)  # noqa: E731
    vault.put(PATH, {"MLPLATFORM_API_KEYS": keyring("k1-outbound")})
    vault.put(serving_path, {"SERVING_DRIFT_API_KEY": "k1-outbound"})
    port = free_port()
    log = tmp_path / "drift.log"
    proc = serve(service_env(vault, tmp_path, jwt), port, log)
    url = f"http://127.0.0.1:{port}"
    secrets = login_as(vault, tmp_path, "model-serving", serving_path)
    settings = ServingSettings(drift_url=url, payload_spool_dir=tmp_path / "spool")
    logger = _payload_logger(settings, secrets, CollectorRegistry())
    sent: list[tuple[str, int]] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            auth = logger._client.headers.get("Authorization", "")
            r = await logger._client.post("/v1/records", json={"records": []})
            sent.append((auth, r.status_code))

    async def until(predicate, deadline_s: float = 20) -> float:  # noqa: ANN001
        start = time.monotonic()
        while not predicate():
            assert time.monotonic() - start < deadline_s, "not within the deadline"
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    def drift_accepts(key: str) -> bool:
        return (
            httpx.post(f"{url}/v1/records", json={"records": []}, headers={"X-API-Key": key}).status_code
            != 401
        )

    try:
        await asyncio.to_thread(wait_ready, url, 120, proc, "/v2/health/live")
        await logger.start()
        task = asyncio.create_task(load())
        await until(lambda: len(sent) > 20)
        vault.put(PATH, {"MLPLATFORM_API_KEYS": keyring("k1-outbound", "k2-outbound")})
        await until(lambda: drift_accepts("k2-outbound"))
        vault.put(serving_path, {"SERVING_DRIFT_API_KEY": "k2-outbound"})
        switched = await until(lambda: logger._client.headers.get("Authorization") == "Bearer k2-outbound")
        await until(lambda: sum(1 for a, _ in sent if a.endswith("k2-outbound")) > 20)
        vault.put(PATH, {"MLPLATFORM_API_KEYS": keyring("k2-outbound")})
        await until(lambda: not drift_accepts("k1-outbound"))
        n = len(sent)
        await until(lambda: len(sent) > n + 20)  # still delivering with the new key
        stop.set()
        await task
    finally:
        stop.set()
        await logger.stop()
        secrets.close()
        proc.terminate()
        proc.wait(timeout=40)
    failed = [s for s in sent if s[1] != 200]
    assert failed == [], f"{len(failed)} of {len(sent)} failed"
    assert {a for a, _ in sent} == {"Bearer k1-outbound", "Bearer k2-outbound"}
    assert switched < 5  # refresh interval 0.5 s
    output = log.read_text(errors="replace")
    assert "k1-outbound" not in output and "k2-outbound" not in output
    print(
        f"outbound rotation under load: {len(sent)} requests, 0 failed; serving switched after {switched:.2f}s"
    )
