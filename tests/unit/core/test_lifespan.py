"""core.app.planes_lifespan: data planes start in order and the started ones stop in reverse order."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from mlplatform.core.app import planes_lifespan


class Plane:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    async def start(self) -> None:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


async def test_order_and_a_failed_start():
    log: list[str] = []
    async with planes_lifespan(Plane("a", log), Plane("b", log))(FastAPI()):
        log.append("serve")
    assert log == ["start a", "start b", "serve", "stop b", "stop a"]
    log.clear()
    with pytest.raises(RuntimeError, match="b cannot start"):
        async with planes_lifespan(Plane("a", log), Plane("b", log, fail=True))(FastAPI()):
            log.append("serve")
    assert log == ["start a", "stop a"]  # only what started is stopped
