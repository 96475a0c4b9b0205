"""Fixtures of the deployment checks: the repository, the pinned tools, every overlay rendered once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlplatform.deploy.render import ENVIRONMENTS
from tests.deploy.rendered import render_overlay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session", autouse=True)
def pinned_tools() -> None:
    """helm and kubectl must be the pinned binaries in .venv/bin (`make tools`), never skipped."""
    for tool in ("helm", "kubectl"):
        if not (ROOT / ".venv" / "bin" / tool).is_file():
            pytest.fail(f".venv/bin/{tool} is missing: run `make tools`")


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every overlay rendered once per session: {env: [objects]} (tests/deploy/rendered.py)."""
    return {env: render_overlay(env) for env in ENVIRONMENTS}
