from __future__ import annotations

import pytest

from tests.unit.drift.tiny_registry import TinyRegistry, make_registry


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> TinyRegistry:
    return make_registry(tmp_path_factory.mktemp("drift-registry"))


@pytest.fixture(params=["sqlite", "postgres"])
def drift_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once on the embedded SQLite store and once on a fresh PostgreSQL database.

    The service reads ``DRIFT_DATABASE_URL`` from the environment as in a pod, so the tests that use
    this fixture need no other change to cover both backends.
    """
    if request.param == "postgres":
        server = request.getfixturevalue("postgres")
        monkeypatch.setenv("DRIFT_DATABASE_URL", server.create_database())
    else:
        monkeypatch.delenv("DRIFT_DATABASE_URL", raising=False)
    return request.param
