"""Fixtures that integration tests in several folders share."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_proc import running_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real redis-server with ``tests.redis_proc.REDIS_PASSWORD`` on a free port: ``(address, process)``."""
    with running_redis(tmp_path) as server:
        yield server
