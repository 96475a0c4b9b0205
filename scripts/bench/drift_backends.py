"""One drift-detection process per store backend, for the bench scripts that measure both (a module,
not a bench: ``make bench`` runs ``bench_*.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from tests.pg import start_postgres
from tests.procs import ServiceProcess, start_service


def per_backend(
    tmp: Path, env: Mapping[str, str], measure: Callable[[str, ServiceProcess], float]
) -> dict[str, float]:
    """``measure(backend, service)`` against a real drift-detection process on the embedded SQLite
    store, then on PostgreSQL (a fresh Debian cluster under ``tmp``): one figure per backend.

    Each process runs with ``env`` (the registry's variables and the settings under test) plus its
    own data dir under ``tmp``, count windows of 1000, retraining off and the backend's database URL;
    it is stopped after its measurement, the PostgreSQL cluster at the end."""
    rates: dict[str, float] = {}
    pg = start_postgres(tmp / "pg")
    try:
        for backend, dsn in (("sqlite", ""), ("postgresql", pg.dsn())):
            service_env = {
                **env,
                "MLPLATFORM_DATA_DIR": str(tmp / f"data-{backend}"),
                "DRIFT_WINDOW_SIZE": "1000",
                "DRIFT_RETRAIN_MODE": "off",
                "DRIFT_DATABASE_URL": dsn,
            }
            svc = start_service("drift-detection", service_env, tmp / "logs")
            try:
                rates[backend] = measure(backend, svc)
            finally:
                svc.stop()
    finally:
        pg.stop()
    return rates
