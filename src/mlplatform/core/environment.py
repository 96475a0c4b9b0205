"""Process environment defaults, set in one start-up place.

Library functions never set environment variables. Every service process sets these once at start-up:
:func:`mlplatform.core.app.build_context` (which every app factory, and so ``mlplatform serve`` and the
tests, goes through) and the serving model cache's prepare child (its own process entry point) call
:func:`apply_environment_defaults`. A value already set in the environment wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

#: Variable -> default, with why each is set.
ENVIRONMENT_DEFAULTS: Mapping[str, str] = {
    # Serving and explainability load models from the platform's own registry, which they trust:
    # MLflow refuses to unpickle (or skops-load) a model without this.
    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
    # No progress bars from MLflow's artifact downloads in the JSON logs.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def apply_environment_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set each :data:`ENVIRONMENT_DEFAULTS` variable that ``environ`` (the process environment) lacks."""
    target = os.environ if environ is None else environ
    for key, value in ENVIRONMENT_DEFAULTS.items():
        target.setdefault(key, value)
