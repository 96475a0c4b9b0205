"""The secrets of a training run (``mlplatform train`` / ``mlplatform retrain``) from Vault.

The training settings (:class:`~mlplatform.training.pipeline.TrainSettings`) and MLflow's client read
their secrets from the environment: ``FEATURES_DATABASE_URL`` (the feature store's PostgreSQL
offline store, where the training rows come from) and ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``. With ``MLPLATFORM_SECRETS_BACKEND=vault`` (the retraining Job in prod)
:func:`load_training_secrets` reads the run's Vault KV secret once, before the settings are built,
and puts each of those names the environment does not set into the environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

log = logging.getLogger("mlplatform.training.secrets")

#: Secret names a training run takes from Vault when the environment does not set them.
TRAINING_SECRETS: tuple[str, ...] = (
    "FEATURES_DATABASE_URL",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def load_training_secrets(environ: MutableMapping[str, str] | None = None) -> tuple[str, ...]:
    """With ``MLPLATFORM_SECRETS_BACKEND=vault``, fill the unset :data:`TRAINING_SECRETS` of
    ``environ`` (default ``os.environ``) from the Vault secret the ``VAULT_*`` variables name.

    A name the environment already sets keeps its value; one the secret lacks stays unset. Returns
    the names taken from Vault (never values). ``env`` or unset: nothing happens. Raises
    :class:`~mlplatform.core.vault.VaultStartupError` (one line naming address, role and path) when
    Vault cannot be used, ``ValueError`` for another backend name.
    """
    env = os.environ if environ is None else environ
    backend = env.get("MLPLATFORM_SECRETS_BACKEND", "env") or "env"
    if backend == "env":
        return ()
    if backend != "vault":
        raise ValueError(f"MLPLATFORM_SECRETS_BACKEND must be 'env' or 'vault', not {backend!r}")
    from mlplatform.core.vault import VaultSecretsBackend

    # one read: a run takes its secrets at start-up, so no refresh thread
    vault = VaultSecretsBackend.from_env(env, start_thread=False)
    try:
        loaded = []
        for name in TRAINING_SECRETS:
            if env.get(name):
                continue
            value = vault.get(name)
            if value is not None:
                env[name] = value
                loaded.append(name)
        paths = ", ".join(f"{vault.config.kv_mount}/{p}" for p in vault.config.secret_paths)
    finally:
        vault.close()
    log.info("training secrets from Vault %s: %s", paths, ", ".join(loaded) or "none")
    if not env.get("FEATURES_DATABASE_URL"):
        log.warning(
            "FEATURES_DATABASE_URL is neither set nor in Vault %s: training rows come from the data "
            "directory, not the feature store's offline store",
            paths,
        )
    return tuple(loaded)
