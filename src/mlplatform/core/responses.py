"""JSON response rendered with orjson (handles numpy scalars and arrays)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSON

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def render_json(content: Any) -> bytes:
    """The JSON bytes every service answers with (orjson; numpy values written natively)."""
    return orjson.dumps(content, option=_OPTIONS)


class JSONResponse(_StarletteJSON):
    """A JSONResponse serialised by orjson; numpy values are written natively."""

    def render(self, content: Any) -> bytes:
        return render_json(content)
