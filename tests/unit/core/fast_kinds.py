"""Shared pieces of the small fast-route test apps (tests/unit/core/test_server.py and
tests/unit/serving/test_fast_route.py): the ``/fast/{kind}`` route match and the error kinds."""

from __future__ import annotations

import re

from mlplatform.core.errors import PlatformError, Unauthorized

FAST_TEMPLATE = "/fast/{kind}"


def match_fast_kind(path: str) -> tuple[str, tuple[str, ...]] | None:
    """``/fast/<kind>`` -> (route template, (kind,)); anything else -> None."""
    m = re.fullmatch(r"/fast/([^/]+)", path)
    return (FAST_TEMPLATE, (m.group(1),)) if m else None


def raise_for_kind(kind: str, secret: str = "secret detail") -> None:
    """The error each kind stands for: ``boom`` a bug (500), ``auth`` a 401, ``teapot`` a 418."""
    if kind == "boom":
        raise RuntimeError(secret)
    if kind == "auth":
        raise Unauthorized("missing API key")
    if kind == "teapot":
        raise PlatformError("short and stout", 418)
