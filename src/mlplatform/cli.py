"""The ``mlplatform`` command: train, serve one service, or bring the whole platform up."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import typer

from mlplatform.core.environment import apply_environment_defaults
from mlplatform.services import SERVICES, STOP_WAVES

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="mlplatform: serving, features, drift, explain"
)


@app.callback()
def _start_up() -> None:
    # Runs before every command: this process's start-up (core.environment), whichever command it runs.
    apply_environment_defaults()


def _private_prometheus() -> None:
    """Services keep metrics in private in-process registries. Feast's import sets
    PROMETHEUS_MULTIPROC_DIR process-wide (and so for every child of a process that imported it),
    which would switch prometheus_client to mmap-file values without exemplars: drop it and fix
    prometheus_client's value class before anything imports feast."""
    for var in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR", "prometheus_multiproc_dir"):
        os.environ.pop(var, None)
    import prometheus_client  # noqa: F401 - imported now, with the variables unset


@app.command()
def serve(
    service: str = typer.Argument(..., envvar="MLPLATFORM_SERVICE", help=f"One of: {', '.join(SERVICES)}"),
    port: int | None = typer.Option(
        None, envvar="MLPLATFORM_PORT", help="Port to listen on (default: the service's own)."
    ),
    host: str = typer.Option("0.0.0.0", help="Interface to bind."),
) -> None:
    """Run one service in this process (what each container's entrypoint calls)."""
    _private_prometheus()
    import uvicorn

    from mlplatform.core.logging import configure_logging
    from mlplatform.core.server import FastPathProtocol

    spec = SERVICES.get(service)
    if spec is None:
        raise typer.BadParameter(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    from pydantic import ValidationError

    settings_cls = spec.load_settings_class()
    try:
        settings = settings_cls()
    except ValidationError as exc:
        typer.echo(f"{spec.name}: invalid configuration:\n{exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(spec.name, settings.log_level)
    try:
        fastapi_app = spec.load_factory()(settings)
    except (RuntimeError, ValueError, OSError) as exc:
        # start-up failures (Vault unreachable or role wrong, bad model list, unwritable data dir):
        # one clear critical log line and a non-zero exit, not a traceback
        logging.getLogger("mlplatform.cli").critical("%s cannot start: %s", spec.name, exc)
        raise typer.Exit(2) from None
    config = uvicorn.Config(
        fastapi_app,
        host=host,
        port=port or spec.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        # Longer than the idle timeout of clients and load balancers (60 s is common), so the client
        # side closes an idle pooled connection first. uvicorn's default (5 s) races clients that
        # reuse a connection after ~5 s idle: the request hits a socket the server just closed.
        timeout_keep_alive=75,
        loop="uvloop",
        # no WebSocket routes: skip importing a WebSocket implementation at start-up (~50 ms)
        ws="none",
        # uvicorn's httptools protocol, serving the app's fast routes (V2 infer, online features)
        # without the ASGI round trip; everything else goes through uvicorn as usual
        http=FastPathProtocol,
        # No client address is used (logs key on request and trace ids), and the ingress controller is
        # what sets X-Forwarded-*: skip uvicorn's per-request proxy-header pass and its Server header.
        proxy_headers=False,
        server_header=False,
    )
    draining_server(config, fastapi_app, settings.shutdown_delay_s).run()


def draining_server(config: Any, app: Any, delay_s: float) -> Any:  # noqa: ANN401 - uvicorn types, lazy import
    """uvicorn's server with a shutdown delay: the first SIGTERM/SIGINT makes readiness answer 503 and
    keeps serving ``delay_s`` seconds before uvicorn's graceful shutdown starts (a second signal, or a
    delay of 0, shuts down at once). A Service or proxy that health-checks readiness stops routing here
    before the listening socket closes, so no request is sent into a closing server."""
    import threading

    import uvicorn

    class DrainingServer(uvicorn.Server):
        draining = False
        timer: threading.Timer | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:  # noqa: ANN401
            if delay_s <= 0 or self.draining or self.should_exit:
                if self.timer is not None:  # a second signal: shut down now, once
                    self.timer.cancel()
                super().handle_exit(sig, frame)
                return
            self.draining = True
            app.draining = True
            logging.getLogger("mlplatform.cli").info(
                "signal %s: readiness now 503; serving %.1f s more before shutting down", sig, delay_s
            )
            self.timer = threading.Timer(delay_s, self._delayed_exit, args=(sig, frame))
            self.timer.daemon = True
            self.timer.start()

        def _delayed_exit(self, sig: int, frame: Any) -> None:  # noqa: ANN401
            if not self.should_exit:
                super().handle_exit(sig, frame)

    return DrainingServer(config)


@app.command()
def materialize(
    end: str | None = typer.Option(None, help="ISO 8601 end of the range (default: now; naive = UTC)."),
    start: str | None = typer.Option(
        None, help="ISO 8601 start: materialise the whole [START, END] range (a backfill), not incrementally."
    ),
    feature_view: list[str] | None = typer.Option(
        None, "--feature-view", help="Only this feature view (repeatable; default: every one)."
    ),
    apply: bool = typer.Option(
        False, help="Apply the repository's definitions first (the feature-store service does at start-up)."
    ),
) -> None:
    """Materialise incrementally into the online store, then exit (what the feature-store CronJob runs).

    Each feature view from its last materialised end (kept in the registry; the first run starts at
    now minus the view's TTL) up to END, from the offline store to the online store, with the
    feature-store settings (FEATURES_*, its secrets backend, MLPLATFORM_DATA_DIR). --start backfills
    the whole range instead. Prints the rows written per view as JSON; exit 1 when it fails, 2 on bad
    configuration.
    """
    _private_prometheus()
    import json
    from datetime import datetime

    from prometheus_client import CollectorRegistry
    from pydantic import ValidationError

    from mlplatform.core.errors import PlatformError
    from mlplatform.core.logging import configure_logging
    from mlplatform.core.secrets import build_secrets_backend
    from mlplatform.features.dataplane import FeatureDataPlane
    from mlplatform.features.metrics import FeatureMetrics
    from mlplatform.features.settings import FeatureSettings

    log = logging.getLogger("mlplatform.cli")
    try:
        settings = FeatureSettings(apply_on_start=apply)
        # a batch job waits for Redis (the service's short timeouts are for answering reads fast)
        settings = settings.model_copy(update={"redis_timeout_s": max(settings.redis_timeout_s, 10.0)})
        end_at = datetime.fromisoformat(end) if end else None
        start_at = datetime.fromisoformat(start) if start else None
    except (ValidationError, ValueError) as exc:
        typer.echo(f"materialize: invalid configuration, --start or --end:\n{exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging("feature-store", settings.log_level)
    try:
        secrets = build_secrets_backend(settings.secrets_backend)
    except (RuntimeError, ValueError, OSError) as exc:
        log.critical("materialize cannot start: %s", exc)
        raise typer.Exit(2) from None
    plane = FeatureDataPlane(settings, FeatureMetrics(CollectorRegistry()), secrets=secrets)
    try:
        plane.check_database()
        plane.load()
        result = plane.materialize_blocking(end_at, feature_view or None, start=start_at)
    except (ValueError, RuntimeError, OSError) as exc:
        log.critical("materialize cannot start: %s", exc)
        raise typer.Exit(2) from None
    except PlatformError as exc:
        log.critical("materialize failed: %s", exc.message)
        raise typer.Exit(1) from None
    finally:
        secrets.close()
    log.info("materialised up to %s: rows written %s", result["end"].isoformat(), result["rows_written"])
    typer.echo(json.dumps(result, default=str))


def _training_secrets() -> None:
    """With MLPLATFORM_SECRETS_BACKEND=vault, the run's secrets from Vault into the environment
    (mlplatform.training.secrets); a Vault that cannot be used is one line and exit 2."""
    from mlplatform.core.vault import VaultStartupError
    from mlplatform.training.secrets import load_training_secrets

    try:
        load_training_secrets()
    except (VaultStartupError, ValueError) as exc:
        typer.echo(f"error: cannot read the training secrets from Vault: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def train(
    rows: int = typer.Option(200_000, help="Number of generated transactions."),
    seed: int = typer.Option(7, help="Random seed: the same seed gives the same data and models."),
    force: bool = typer.Option(False, help="Retrain even if the demo models are already registered."),
    text_seconds: float = typer.Option(
        100, help="Training time of the demo summarizer (0: untrained, random weights)."
    ),
) -> None:
    """Generate the demo data, train the demo models and register them in MLflow as 'champion'.

    With MLPLATFORM_SECRETS_BACKEND=vault, FEATURES_DATABASE_URL and MLflow credentials the
    environment does not set come from the Vault secret named by VAULT_* (exit 2 if Vault fails).
    """
    from mlplatform.training.pipeline import TrainSettings, run_training
    from mlplatform.training.text import run_text_training

    _training_secrets()
    settings = TrainSettings(rows=rows, seed=seed)
    run_training(settings, force=force, progress=True)
    run_text_training(settings.resolved_tracking_uri(), train_seconds=text_seconds, seed=seed, force=force)


@app.command()
def retrain(
    model: str | None = typer.Option(
        None, "--model", help="Model to retrain [env MLPLATFORM_RETRAIN_MODEL, required]."
    ),
    from_version: str | None = typer.Option(
        None, "--from-version", help="Version drift fired on, recorded [env MLPLATFORM_RETRAIN_FROM_VERSION]."
    ),
    promote: str | None = typer.Option(
        None,
        "--promote",
        help="auto: a winning challenger becomes @champion; manual: print the promote command "
        "[env MLPLATFORM_RETRAIN_PROMOTE, default manual].",
    ),
    margin: float | None = typer.Option(
        None,
        "--margin",
        help="Win only if challenger >= champion + margin [env MLPLATFORM_RETRAIN_MARGIN, default 0].",
    ),
    metric: str | None = typer.Option(
        None, "--metric", help="roc_auc or pr_auc [env MLPLATFORM_RETRAIN_METRIC, default roc_auc]."
    ),
    env: str | None = typer.Option(
        None,
        "--env",
        help="Overlay named in the printed promote command [env MLPLATFORM_RETRAIN_ENV, default prod].",
    ),
) -> None:
    """Retrain one model as @challenger, score it against @champion on the latest data, promote only on a win.

    With MLPLATFORM_SECRETS_BACKEND=vault, FEATURES_DATABASE_URL and MLflow credentials the
    environment does not set come from the Vault secret named by VAULT_* (exit 2 if Vault fails).
    """
    from pydantic import ValidationError

    from mlplatform.training.retrain import RetrainError, RetrainSettings, run_retraining

    overrides = {
        "model": model,
        "from_version": from_version,
        "promote": promote,
        "margin": margin,
        "metric": metric,
        "env": env,
    }
    try:
        settings = RetrainSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))} (MLPLATFORM_RETRAIN_{str(e['loc'][0]).upper()}): {e['msg']}"
            for e in exc.errors()
        )
        typer.echo(f"error: invalid retrain configuration: {problems}", err=True)
        raise typer.Exit(2) from None
    _training_secrets()
    try:
        result = run_retraining(settings)
    except RetrainError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - registry/storage failures: one line, not a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        typer.echo(f"error: retraining {settings.model} failed: {first}", err=True)
        raise typer.Exit(1) from None
    for line in result.lines():
        typer.echo(line)


@app.command("batch-score")
def batch_score(
    model: str = typer.Option(..., "--model", help="Registered model name."),
    version: str | None = typer.Option(None, "--version", help="Model version number."),
    alias: str | None = typer.Option(None, "--alias", help="Model alias (default: champion)."),
    entities: Path = typer.Option(
        ..., "--entities", help="Parquet or CSV: user_id, merchant_id, event_timestamp, request features."
    ),
    out: Path = typer.Option(..., "--out", help="Parquet file to write (replaced atomically)."),
) -> None:
    """Score entity rows with a model version, features point-in-time from the Feast offline store.

    Writes the rows, their features, fraud_probability, model, model_version, scored_at and
    prediction_id to --out. With BATCH_DRIFT_URL set the rows go to drift detection as source
    'batch'. Registry, data directory and feature store as for training (MLFLOW_TRACKING_URI,
    MLPLATFORM_DATA_DIR, FEATURES_DATABASE_URL; from Vault with MLPLATFORM_SECRETS_BACKEND=vault).
    Prints the run summary as JSON; exit 2 on bad input, 1 when scoring or logging fails.
    """
    import json

    from pydantic import ValidationError

    from mlplatform.batch.scoring import BatchError, BatchSettings, run_batch
    from mlplatform.core.errors import NotFound
    from mlplatform.core.registry import ModelRef
    from mlplatform.training.pipeline import TrainSettings

    if version is not None and alias is not None:
        typer.echo("error: --version and --alias exclude each other", err=True)
        raise typer.Exit(2)
    if version is not None and not version.isdigit():
        typer.echo(f"error: --version {version!r}: expected a positive integer", err=True)
        raise typer.Exit(2)
    _training_secrets()
    try:
        train = TrainSettings()
        settings = BatchSettings()
    except ValidationError as exc:
        typer.echo(f"error: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None
    ref = (
        ModelRef(model, alias=None, version=version)
        if version
        else ModelRef(model, alias=alias or "champion")
    )
    try:
        result = run_batch(
            ref,
            entities,
            out,
            data_dir=train.data_dir,
            tracking_uri=train.resolved_tracking_uri(),
            feature_database_url=train.feature_database_url,
            settings=settings,
        )
    except BatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except NotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - registry, feature store or drift failures: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        typer.echo(f"error: batch scoring with {ref} failed: {first}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result.to_dict()))


@app.command()
def up(
    train_rows: int = typer.Option(
        200_000, help="Transactions to generate if the demo models need training."
    ),
) -> None:
    """Train and register the demo models if none exist, then start all four services (Ctrl-C stops them)."""
    from mlplatform.training.pipeline import TrainSettings, run_training
    from mlplatform.training.text import run_text_training

    train_settings = TrainSettings(rows=train_rows)
    run_training(train_settings, force=False, progress=True)
    run_text_training(train_settings.resolved_tracking_uri(), force=False)
    procs: list[subprocess.Popen[bytes]] = []

    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Ctrl-C, `kill`, or a supervisor's SIGTERM all stop the services gracefully (also when the
    # shell started us with SIGINT ignored, as background jobs are).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    env = dict(os.environ)
    env.setdefault("MLPLATFORM_DATA_DIR", str(Path.cwd() / "data"))
    # Local mode: authentication off unless the user configured keys.
    if "MLPLATFORM_API_KEYS" not in env:
        for prefix in ("SERVING_", "FEATURES_", "DRIFT_", "EXPLAIN_"):
            env.setdefault(f"{prefix}AUTH_ENABLED", "false")
    env.setdefault("SERVING_FEATURE_STORE_URL", "http://127.0.0.1:8081")
    env.setdefault("SERVING_DRIFT_URL", "http://127.0.0.1:8082")
    env.setdefault("EXPLAIN_FEATURE_STORE_URL", "http://127.0.0.1:8081")
    # model-serving's gRPC port (default 8081) would collide with the feature store's HTTP port here
    env.setdefault("SERVING_GRPC_PORT", "8090")
    # the demo summarizer (V2 infer, generate, generate_stream) beside the tabular demo models
    from mlplatform.core.registry import DEMO_MODELS
    from mlplatform.training.text import SUMMARIZER_MODEL_NAME

    env.setdefault("SERVING_MODELS", ",".join((*DEMO_MODELS, SUMMARIZER_MODEL_NAME)))
    env.setdefault("EXPLAIN_MODELS", env["SERVING_MODELS"])  # explain what serving serves (text too)
    # the demo models' segments: merchant category and hour bucket (docs/quality.md)
    env.setdefault(
        "DRIFT_SEGMENTS",
        '{"fraud-detector": ["merchant_category", "hour"], "fraud-detector-mlp": ["merchant_category", "hour"]}',
    )
    for spec in SERVICES.values():
        cmd = [sys.executable, "-m", "mlplatform.cli", "serve", spec.name, "--port", str(spec.port)]
        typer.echo(f"starting {spec.name} on http://127.0.0.1:{spec.port}")
        procs.append(start_child(cmd, env))
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        failed = [s for s, p in zip(SERVICES, procs, strict=True) if p.poll() is not None]
        typer.echo(f"service exited: {', '.join(failed)}; stopping the rest", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        stop_services(dict(zip(SERVICES, procs)))  # noqa: B905 - procs may stop short if a start failed


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a function for the child to run between fork and exec so that it gets SIGTERM when the
    process that started it dies (even by SIGKILL). libc is loaded here, in the parent: the child may
    only call it, since ``up`` has threads (training) and an import after fork could deadlock."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_child(cmd: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a service in its own process group, so a terminal's Ctrl-C reaches only ``up``, which
    stops the services in order (:func:`stop_services`); it still dies with ``up``."""
    return subprocess.Popen(cmd, env=dict(env), process_group=0, preexec_fn=_die_with_parent())  # noqa: PLW1509


def stop_services(procs: Mapping[str, subprocess.Popen[bytes]], timeout_s: float = 35) -> None:
    """SIGTERM the services wave by wave (:data:`mlplatform.services.STOP_WAVES`: clients before the
    peers they send to), waiting for each wave to exit (killed after ``timeout_s``) before the next."""
    waves = [*STOP_WAVES, tuple(n for n in procs if all(n not in w for w in STOP_WAVES))]
    for wave in waves:
        running = [procs[n] for n in wave if n in procs and procs[n].poll() is None]
        for p in running:
            p.send_signal(signal.SIGTERM)
        for p in running:
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# Deployment: pin a model version or image tag in an environment overlay (mlplatform.deploy.promote).
from mlplatform.deploy.promote import promote as _promote  # noqa: E402

app.command(name="promote")(_promote)


if __name__ == "__main__":
    app()
