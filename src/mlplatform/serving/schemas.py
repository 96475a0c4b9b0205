"""Response bodies of serving's own (non-V2) routes. The Open Inference Protocol documents themselves are the
V2 package's (:mod:`mlplatform.v2.types`), shared with explainability; the error body is
:class:`mlplatform.core.errors.ErrorBody`."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ReloadResult(BaseModel):
    """Result of a forced reload."""

    name: str = Field(description="Registered model name.")
    version: str = Field(description="Version served after the reload.")
    runtime: str = Field(description="Runtime serving it.")
