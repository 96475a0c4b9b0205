from __future__ import annotations

import pytest

from tests.unit.drift.tiny_registry import TinyRegistry, make_registry


@pytest.fixture(scope="session")
def drift_registry(tmp_path_factory: pytest.TempPathFactory) -> TinyRegistry:
    return make_registry(tmp_path_factory.mktemp("drift-int-registry"))
