"""``mlplatform retrain``: retrain one model, compare it with ``@champion``, and move the alias only on a win.

What drift detection's retraining trigger runs (a Kubernetes Job, or a subprocess locally):

1. Retrain ``MLPLATFORM_RETRAIN_MODEL`` with the training pipeline of ``mlplatform train``
   (:func:`mlplatform.training.pipeline.train_and_register`) on the current training data
   (``<data_dir>/raw/transactions.parquet``), register the new version and set ``@challenger``.
2. Score the challenger and the current ``@champion`` on the same held-out *recent window*: the
   latest ``TRAIN_TEST_FRACTION`` (default 20 %) of transactions by ``event_timestamp``. The
   challenger is trained only on the earlier rows, so the window is unseen by it. Both versions
   are loaded from the registry as pyfunc models, so the scores are those of what would serve.
3. Decide: the challenger wins only if ``challenger_score >= champion_score + margin`` (metric
   ``roc_auc`` by default; ``pr_auc`` is recorded too). No champion yet: the challenger wins.
   Segments too: in every segment of ``segment_columns`` (default merchant category and hour bucket)
   with enough labelled positives, the challenger's ``segment_metric`` may not be below the
   champion's by more than ``segment_margin``; one such segment refuses the challenger.
4. Act: ``promote=auto`` and a win moves ``@champion`` to the challenger; ``promote=manual``
   never moves it, and on a win prints the ``mlplatform promote`` command that pins the version
   in the environment overlay, to be committed and opened as a pull request.
5. Record: tags ``mlplatform.gate.*`` on the challenger version and a ``gate-<model>-v<version>``
   run (params, ``champion_<metric>`` / ``challenger_<metric>`` metrics, ``gate/decision.json``).

A kept champion is a normal outcome (exit 0); errors raise :class:`RetrainError` (one line).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from mlplatform.core.registry import DEFAULT_ALIAS
from mlplatform.features import contract as feat
from mlplatform.quality.segments import (
    SegmentBinsSettings,
    SegmentSpec,
    missing_columns,
    parse_specs,
    segment_table,
    worse_segments,
)
from mlplatform.training.pipeline import (
    TAG_MODEL_FEATURES,
    TrainingData,
    TrainSettings,
    alias_version,
    experiment_id,
    held_out_metrics,
    load_transactions,
    mlflow_uri,
    model_flavor,
    prepare_data,
    prepare_registry,
    train_and_register,
)

log = logging.getLogger("mlplatform.training.retrain")

CHALLENGER_ALIAS = "challenger"
METRICS: tuple[str, ...] = ("roc_auc", "pr_auc")
#: Prefix of the model-version tags the gate sets on the challenger.
TAG_GATE = "mlplatform.gate."

#: Decisions: the challenger won and ``@champion`` moved to it (``promote=auto``).
PROMOTED = "promoted"
#: The challenger won but ``promote=manual``: ``@champion`` stays until the promotion PR is merged.
AWAITING_PROMOTION = "awaiting_promotion"
#: The challenger did not beat the champion by the margin: ``@champion`` stays.
KEPT_CHAMPION = "kept_champion"


class RetrainError(RuntimeError):
    """Retraining could not run or finish (unknown model, registry unreachable): a one-line message."""


class RetrainSettings(SegmentBinsSettings):
    """What ``mlplatform retrain`` retrains and how it decides (env prefix ``MLPLATFORM_RETRAIN_``).

    The training itself is configured by :class:`~mlplatform.training.pipeline.TrainSettings`
    (``TRAIN_*``, ``MLPLATFORM_DATA_DIR``, ``MLFLOW_TRACKING_URI``).
    """

    model_config = SettingsConfigDict(env_prefix="MLPLATFORM_RETRAIN_", extra="ignore")

    model: str = Field(
        ..., min_length=1, description="Registered model to retrain: one the training pipeline trains."
    )
    from_version: str | None = Field(
        None, description="Version drift fired on (informational: recorded with the decision)."
    )
    promote: Literal["auto", "manual"] = Field(
        "manual",
        description="`auto`: a winning challenger becomes @champion (dev, staging). `manual`: never "
        "move @champion; print the promote command for a pull request (prod).",
    )
    margin: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="The challenger wins only if its score >= the champion's score + margin.",
    )
    metric: Literal["roc_auc", "pr_auc"] = Field(
        "roc_auc", description="Metric the decision compares (both are recorded)."
    )
    segment_columns: str = Field(
        "merchant_category,hour",
        description="Comma-separated input columns whose segments the gate checks: the challenger is refused "
        "if it is worse than the champion by more than segment_margin in any segment. Empty: no segment check. "
        "A column the training data lacks is an error naming it.",
    )
    segment_metric: Literal["roc_auc", "pr_auc", "recall", "precision", "f1"] = Field(
        "roc_auc", description="Metric compared per segment."
    )
    segment_margin: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Largest drop of segment_metric in any segment the challenger may have against the champion.",
    )
    segment_min_positives: int = Field(
        10,
        ge=1,
        description="Segments with fewer labelled positives in the window are not judged (too noisy).",
    )
    env: str = Field(
        "prod",
        validation_alias=AliasChoices("MLPLATFORM_RETRAIN_ENV", "env"),
        description="Environment overlay named in the printed `mlplatform promote` command.",
    )


@dataclass(frozen=True)
class Window:
    """The held-out recent window both versions are scored on."""

    fraction: float
    start: str
    end: str
    rows: int
    frauds: int
    train_rows: int
    train_end: str

    def describe(self) -> str:
        return (
            f"latest {self.fraction:.0%} of transactions by event_timestamp, {self.start} .. {self.end}, "
            f"{self.rows} rows ({self.frauds} fraud); challenger trained on the {self.train_rows} "
            f"earlier rows (to {self.train_end})"
        )


@dataclass
class GateResult:
    """What ``mlplatform retrain`` did: versions, scores, decision and where it is recorded."""

    model: str
    from_version: str | None
    promote: str
    env: str
    metric: str
    margin: float
    window: Window
    segment_margin: float
    challenger_version: str
    challenger_run_id: str
    challenger_scores: dict[str, float]
    champion_version: str | None
    champion_scores: dict[str, float] | None
    challenger_wins: bool
    decision: str
    champion_after: str | None
    segment_regressions: list[dict[str, Any]] = field(default_factory=list)
    segments_checked: int = 0
    gate_run_id: str = ""
    promote_command: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The human-readable report the CLI prints."""
        m = self.metric
        out = [
            f"window: {self.window.describe()}",
            f"challenger {self.model}/{self.challenger_version} (@{CHALLENGER_ALIAS}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in self.challenger_scores.items()),
        ]
        if self.champion_version is None or self.champion_scores is None:
            out.append(f"champion: none registered for {self.model}")
            rule = "no champion to beat"
        else:
            out.append(
                f"champion {self.model}/{self.champion_version} (@{DEFAULT_ALIAS}): "
                + ", ".join(f"{k} {v:.4f}" for k, v in self.champion_scores.items())
            )
            op = ">=" if self.challenger_scores[m] >= self.champion_scores[m] + self.margin else "<"
            rule = (
                f"challenger {m} {self.challenger_scores[m]:.4f} {op} champion {self.champion_scores[m]:.4f}"
                f" + margin {self.margin:g}"
            )
        if self.segment_regressions:
            worst = ", ".join(
                f"{r['segment']}={r['value']} {r['metric']} {r['challenger']:.4f} < champion {r['champion']:.4f}"
                for r in self.segment_regressions
            )
            rule += f"; refused: worse than the champion by more than {self.segment_margin:g} in {worst}"
        elif self.segments_checked:
            rule += (
                f"; no segment worse by more than {self.segment_margin:g} ({self.segments_checked} checked)"
            )
        if self.decision == PROMOTED:
            out.append(
                f"decision: {PROMOTED} ({rule}); @{DEFAULT_ALIAS} -> {self.model}/{self.challenger_version}"
            )
        elif self.decision == AWAITING_PROMOTION:
            out.append(
                f"decision: {AWAITING_PROMOTION} ({rule}); promote=manual, so @{DEFAULT_ALIAS} stays on "
                f"{self.champion_version or 'nothing'}. Open the promotion as a pull request with:"
            )
            out.append(f"  {self.promote_command}")
            out.append(
                f"  (it pins the version in kubernetes/overlays/{self.env}/values/common.yaml `models:`; "
                "commit that one-line diff on a branch and open a pull request)"
            )
        else:
            out.append(
                f"decision: {KEPT_CHAMPION} ({rule}); @{DEFAULT_ALIAS} stays on "
                f"{self.model}/{self.champion_version}"
            )
        out.append(f"recorded: model version tags {TAG_GATE}*, MLflow run {self.gate_run_id}")
        return out


def challenger_wins(challenger_score: float, champion_score: float | None, margin: float) -> bool:
    """The gate rule: win iff ``challenger >= champion + margin``; with no champion the challenger wins."""
    if champion_score is None:
        return True
    return challenger_score >= champion_score + margin


def promote_command(env: str, model: str, version: str) -> str:
    """The ``mlplatform promote`` command that pins ``model`` to ``version`` in ``env``'s overlay."""
    return f"mlplatform promote --env {env} --model {model} --version {version}"


def recent_window(data: TrainingData, fraction: float) -> Window:
    """Describe the held-out window of ``data`` (its ``test`` rows) and the rows trained on."""
    ts = feat.TIMESTAMP_COLUMN
    return Window(
        fraction=fraction,
        start=data.test[ts].min().isoformat(),
        end=data.test[ts].max().isoformat(),
        rows=len(data.test),
        frauds=int(data.y_test.sum()),
        train_rows=len(data.train),
        train_end=data.train[ts].max().isoformat(),
    )


def fraud_probability(output: Any) -> np.ndarray:
    """P(fraud) from a pyfunc prediction: the last column of (N, 2) or (N, 1) output, or a 1-D array."""
    arr = np.asarray(output, dtype=np.float64)
    return arr[:, -1] if arr.ndim == 2 else arr.reshape(-1)


def version_probabilities(name: str, version: Any, window: pd.DataFrame) -> np.ndarray:  # noqa: ANN401
    """Load ``name/version`` from the registry as pyfunc and predict P(fraud) on ``window``.

    The input columns come from the version's ``mlplatform.model_features`` tag (the training
    contract) or default to :data:`~mlplatform.features.contract.MODEL_FEATURES`. Needs the mlflow
    fluent API pointed at the registry (:func:`mlflow_uri`).
    """
    import mlflow.pyfunc

    tags = dict(version.tags or {})
    columns = [c for c in tags.get(TAG_MODEL_FEATURES, "").split(",") if c] or list(feat.MODEL_FEATURES)
    missing = [c for c in columns if c not in window.columns]
    if missing:
        raise RetrainError(
            f"{name}/{version.version} needs columns the training data does not have: {', '.join(missing)}"
        )
    x = pd.DataFrame({c: window[c].astype(feat.feature_dtype(c)) for c in columns})
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    return fraud_probability(model.predict(x))


def scores_of(window: pd.DataFrame, p: np.ndarray) -> dict[str, float]:
    """The gate's metrics of probabilities ``p`` on ``window``'s labels."""
    scores = held_out_metrics(window[feat.LABEL_COLUMN].to_numpy(), p)
    return {m: scores[m] for m in METRICS}


def segment_check(
    retrain: RetrainSettings, window: pd.DataFrame, champion_p: np.ndarray, challenger_p: np.ndarray
) -> tuple[list[dict[str, Any]], int]:
    """Segments where the challenger is worse than the champion by more than the margin, and how many
    segment values were judged (enough positives for both)."""
    y = window[feat.LABEL_COLUMN].to_numpy()
    regressions: list[dict[str, Any]] = []
    checked = 0
    for spec in segment_specs(retrain, window.columns):
        seg = spec.values(window[spec.column])
        champ = segment_table(seg, champion_p, y)
        chal = segment_table(seg, challenger_p, y)
        m = retrain.segment_metric
        checked += sum(
            1
            for v, r in champ.items()
            if r["positives"] >= retrain.segment_min_positives
            and r["realized"] is not None
            and r["realized"].get(m) is not None
            and chal[v]["realized"] is not None
            and chal[v]["realized"].get(m) is not None
        )
        for value, a, b in worse_segments(
            champ, chal, m, retrain.segment_margin, retrain.segment_min_positives
        ):
            regressions.append(
                {"segment": spec.name, "value": value, "metric": m, "champion": a, "challenger": b}
            )
    return regressions, checked


def segment_specs(retrain: RetrainSettings, columns: Any) -> list[SegmentSpec]:  # noqa: ANN401
    """The configured segment columns; a RetrainError naming any the training data lacks."""
    names = [c.strip() for c in retrain.segment_columns.split(",") if c.strip()]
    try:
        specs = parse_specs(names, retrain.segment_bins)
    except ValueError as exc:
        raise RetrainError(f"MLPLATFORM_RETRAIN_SEGMENT_BINS: {exc}") from None
    missing = missing_columns(specs, list(columns))
    if missing:
        raise RetrainError(
            f"MLPLATFORM_RETRAIN_SEGMENT_COLUMNS names {', '.join(repr(c) for c in missing)}, which the "
            "training data does not have"
        )
    return specs


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def run_retraining(retrain: RetrainSettings, settings: TrainSettings | None = None) -> GateResult:
    """Retrain ``retrain.model``, register it as ``@challenger``, gate it against ``@champion``, record.

    Raises :class:`RetrainError` for an unknown model, an unreachable registry or a window that
    cannot be scored; every decision (also a kept champion) returns normally.
    """
    from mlflow.exceptions import MlflowException

    settings = settings if settings is not None else TrainSettings()
    name = retrain.model
    if model_flavor(settings, name) is None:
        raise RetrainError(
            f"model {name!r} is not one the training pipeline trains "
            f"({settings.sklearn_model_name}, {settings.mlp_model_name}); set MLPLATFORM_RETRAIN_MODEL"
        )
    uri, client = prepare_registry(settings)
    try:
        champion = alias_version(client, name, DEFAULT_ALIAS)
    except MlflowException as exc:
        raise RetrainError(f"MLflow registry at {uri} is unreachable or failing: {_one_line(exc)}") from exc
    if retrain.from_version and champion is not None and str(champion.version) != retrain.from_version:
        log.warning(
            "drift fired on %s/%s but @%s is now version %s: comparing with the current champion",
            name,
            retrain.from_version,
            DEFAULT_ALIAS,
            champion.version,
        )

    transactions = load_transactions(settings)
    settings = settings.model_copy(update={"rows": len(transactions)})
    with mlflow_uri(uri):
        data = prepare_data(settings, transactions)
        if data.y_test.min() == data.y_test.max():
            raise RetrainError("the held-out window has a single class; ROC/PR AUC are undefined")
        segment_specs(retrain, data.test.columns)  # a missing segment column fails before training
        window = recent_window(data, settings.test_fraction)
        exp_id = experiment_id(client, settings, uri)
        trained = train_and_register(
            client, settings, data, name, experiment_id=exp_id, alias=CHALLENGER_ALIAS
        )
        challenger = client.get_model_version(name, trained["version"])
        try:
            challenger_p = version_probabilities(name, challenger, data.test)
            champion_p = version_probabilities(name, champion, data.test) if champion is not None else None
            challenger_scores = scores_of(data.test, challenger_p)
            champion_scores = scores_of(data.test, champion_p) if champion_p is not None else None
        except Exception as exc:
            # the challenger is registered (@challenger) but no decision was made: say so on it
            client.set_model_version_tag(name, str(challenger.version), f"{TAG_GATE}decision", "error")
            client.set_model_version_tag(name, str(challenger.version), f"{TAG_GATE}error", _one_line(exc))
            if isinstance(exc, RetrainError):
                raise
            raise RetrainError(f"scoring on the held-out window failed: {_one_line(exc)}") from exc

    m = retrain.metric
    regressions, checked = (
        segment_check(retrain, data.test, champion_p, challenger_p) if champion_p is not None else ([], 0)
    )
    wins = (
        challenger_wins(challenger_scores[m], champion_scores[m] if champion_scores else None, retrain.margin)
        and not regressions
    )
    if not wins:
        decision = KEPT_CHAMPION
    elif retrain.promote == "auto":
        decision = PROMOTED
    else:
        decision = AWAITING_PROMOTION
    result = GateResult(
        model=name,
        from_version=retrain.from_version,
        promote=retrain.promote,
        env=retrain.env,
        metric=m,
        margin=retrain.margin,
        window=window,
        segment_margin=retrain.segment_margin,
        segment_regressions=regressions,
        segments_checked=checked,
        challenger_version=str(challenger.version),
        challenger_run_id=trained["run_id"],
        challenger_scores=challenger_scores,
        champion_version=str(champion.version) if champion is not None else None,
        champion_scores=champion_scores,
        challenger_wins=wins,
        decision=decision,
        champion_after=str(champion.version) if champion is not None else None,
        promote_command=(
            promote_command(retrain.env, name, str(challenger.version))
            if decision == AWAITING_PROMOTION
            else None
        ),
    )
    if decision == PROMOTED:
        client.set_registered_model_alias(name, DEFAULT_ALIAS, result.challenger_version)
        result.champion_after = result.challenger_version
        log.info("@%s of %s moved to version %s", DEFAULT_ALIAS, name, result.challenger_version)
    _record(client, exp_id, result)
    return result


def _record(client: Any, exp_id: str, result: GateResult) -> None:
    """Write the decision to MLflow: a gate run and ``mlplatform.gate.*`` tags on the challenger."""
    m = result.metric
    none = "none"
    params = {
        "model": result.model,
        "from_version": result.from_version or none,
        "challenger_version": result.challenger_version,
        "champion_version": result.champion_version or none,
        "promote": result.promote,
        "margin": result.margin,
        "metric": m,
        "window_fraction": result.window.fraction,
        "window_start": result.window.start,
        "window_end": result.window.end,
        "window_rows": result.window.rows,
        "train_rows": result.window.train_rows,
        "train_end": result.window.train_end,
    }
    metrics = {f"challenger_{k}": v for k, v in result.challenger_scores.items()}
    if result.champion_scores is not None:
        metrics.update({f"champion_{k}": v for k, v in result.champion_scores.items()})
    metrics["challenger_wins"] = float(result.challenger_wins)
    metrics["window_fraud_rate"] = result.window.frauds / result.window.rows

    run = client.create_run(
        exp_id,
        run_name=f"gate-{result.model}-v{result.challenger_version}-{int(time.time())}",
        tags={
            "mlplatform.model": result.model,
            f"{TAG_GATE}decision": result.decision,
            f"{TAG_GATE}challenger_run_id": result.challenger_run_id,
        },
    )
    result.gate_run_id = run.info.run_id
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    client.log_dict(run.info.run_id, result.to_dict(), "gate/decision.json")
    client.set_terminated(run.info.run_id)

    tags = {
        "decision": result.decision,
        "challenger_wins": str(result.challenger_wins).lower(),
        "metric": m,
        "challenger_score": repr(result.challenger_scores[m]),
        "champion_score": repr(result.champion_scores[m]) if result.champion_scores else none,
        "champion_version": result.champion_version or none,
        "margin": repr(result.margin),
        "promote": result.promote,
        "from_version": result.from_version or none,
        "window": result.window.describe(),
        "run_id": result.gate_run_id,
    }
    tags["segments_checked"] = str(result.segments_checked)
    tags["segment_regressions"] = json.dumps(result.segment_regressions)[:5000]
    if result.promote_command:
        tags["promote_command"] = result.promote_command
    for key, value in tags.items():
        client.set_model_version_tag(result.model, result.challenger_version, f"{TAG_GATE}{key}", value)
    result.tags = {f"{TAG_GATE}{k}": v for k, v in tags.items()}
    log.info("retrain gate for %s: %s", result.model, json.dumps(result.tags))
