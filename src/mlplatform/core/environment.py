"""Process environment defaults, set in one start-up place.

Library functions never set environment variables. Every process entry point sets these once at
start-up: :func:`mlplatform.core.app.build_context` (which every app factory, and so ``mlplatform serve``
and the tests, goes through), the ``mlplatform`` command itself (before any of its commands runs:
``train``, ``retrain``, ``batch-score``, ``materialize``, ``up``, ``promote``) and the serving model
cache's prepare child (its own process entry point) call :func:`apply_environment_defaults`. A value
already set in the environment wins.
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
    # MLflow's REST client defaults (7 retries, back-off factor 2, 120 s timeout) make one call to an
    # unreachable tracking server block for minutes, so the services' own retry loops (serving's
    # start-up back-off, the alias pollers) never run: fail fast instead. MLflow reads both at every
    # request; RestRegistryClient reads the timeout too.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # Text models (tokenizers, configs) come from the registry or a local folder, never from the
    # Hugging Face Hub: no process of the platform reaches for it (huggingface_hub reads this once,
    # when first imported, so it is set before anything imports transformers).
    "HF_HUB_OFFLINE": "1",
}


def apply_environment_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set each :data:`ENVIRONMENT_DEFAULTS` variable that ``environ`` (the process environment) lacks."""
    target = os.environ if environ is None else environ
    for key, value in ENVIRONMENT_DEFAULTS.items():
        target.setdefault(key, value)


def mlflow_http_timeout(environ: Mapping[str, str] | None = None) -> float:
    """MLflow's REST request timeout in seconds, as MLflow's own client reads it (the default when unset)."""
    key = "MLFLOW_HTTP_REQUEST_TIMEOUT"
    return float((os.environ if environ is None else environ).get(key, ENVIRONMENT_DEFAULTS[key]))
