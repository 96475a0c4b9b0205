"""``<PREFIX>SHUTDOWN_DELAY_S``: on SIGTERM a real service process answers readiness 503 and keeps
serving for the delay, then shuts down; a second signal shuts it down at once."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.procs import start_service

pytestmark = pytest.mark.integration


def _env(reg, tmp_path) -> dict[str, str]:
    return {
        **reg.env(),
        "MLPLATFORM_DATA_DIR": str(tmp_path / "data"),
        "DRIFT_AUTH_ENABLED": "false",
        "DRIFT_RETRAIN_MODE": "off",
        "DRIFT_SHUTDOWN_DELAY_S": "3",
    }


def test_sigterm_turns_readiness_off_then_serves_for_the_delay(drift_registry, tmp_path):
    svc = start_service("drift-detection", _env(drift_registry, tmp_path), tmp_path / "logs")
    try:
        assert httpx.get(f"{svc.url}/v2/health/ready", timeout=5).status_code == 200
        t0 = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        deadline = t0 + 2.0
        ready = None
        while time.monotonic() < deadline:
            ready = httpx.get(f"{svc.url}/v2/health/ready", timeout=5).status_code
            if ready == 503:
                break
            time.sleep(0.05)
        assert ready == 503
        # still serving everything else while endpoints drop the pod
        assert httpx.get(f"{svc.url}/v2/health/live", timeout=5).status_code == 200
        assert httpx.get(f"{svc.url}/v1/models", timeout=5).status_code == 200
        code = svc.proc.wait(30)
        waited = time.monotonic() - t0
        assert code in (0, -signal.SIGTERM)
        assert 2.5 <= waited < 25, waited
    finally:
        svc.stop()


def test_a_second_signal_skips_the_delay(drift_registry, tmp_path):
    env = {**_env(drift_registry, tmp_path), "DRIFT_SHUTDOWN_DELAY_S": "60"}
    svc = start_service("drift-detection", env, tmp_path / "logs")
    try:
        t0 = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert svc.proc.poll() is None  # still in its delay
        svc.proc.send_signal(signal.SIGTERM)
        svc.proc.wait(30)
        assert time.monotonic() - t0 < 20
    finally:
        svc.stop()
