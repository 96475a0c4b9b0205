"""Fixtures of the feature-store unit tests: a small real Feast repository built once per session."""

from __future__ import annotations

import pytest

from tests.unit.features.small_repo import SmallRepo, build_small_repo

__all__ = ["SmallRepo", "build_small_repo"]  # the unit tests of this folder import them from here


@pytest.fixture(scope="session")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> SmallRepo:
    return build_small_repo(tmp_path_factory.mktemp("feature-repo"))
