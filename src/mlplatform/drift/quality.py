"""Model quality in drift detection: delayed labels, realized and estimated (CBPE) performance per
window, segments and fairness, and a retraining trigger on a sustained performance drop.

Transport-free like :class:`~mlplatform.drift.dataplane.DriftDataPlane`, which it works beside: the
drift service closes windows; this service

* stores ground-truth labels by serving's prediction id and row (:meth:`QualityService.add_labels`)
  and recomputes the realized performance of every closed window that got new labels;
* finds closed windows without a quality result (a ticker every ``quality_interval_s``, and on every
  read) and computes the CBPE estimate, the realized performance of whatever labels are there,
  segments (volume, prediction rate, realized performance, drift within the segment) and fairness
  (disparate impact ratio, equal-opportunity difference);
* exports both estimate and realized value as gauges, and judges each labelled window against the
  version's *labelled reference* (the held-out predictions and labels training logs as
  ``quality/reference.parquet``): ``retrain_after_windows`` consecutive windows below the reference
  by more than ``performance_drop`` start retraining, once per episode
  (:func:`mlplatform.drift.retrain.episode_step`, the rule the drift trigger uses).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.core.errors import InvalidInput, NotFound, PayloadTooLarge, Unavailable
from mlplatform.core.registry import ModelRef, resolve_version
from mlplatform.drift import stats
from mlplatform.drift.dataplane import DriftDataPlane, tick_forever
from mlplatform.drift.quality_metrics import QualityMetrics
from mlplatform.drift.quality_schemas import (
    LabelIn,
    LabelsResponse,
    QualityHistory,
    SegmentOut,
    SegmentsOut,
    SegmentValueOut,
    WindowQualityOut,
)
from mlplatform.drift.quality_store import QualityRow
from mlplatform.drift.retrain import episode_step
from mlplatform.quality.cbpe import CBPE
from mlplatform.quality.metrics import realized_metrics
from mlplatform.quality.segments import (
    SegmentSpec,
    disparate_impact,
    equal_opportunity_difference,
    missing_columns,
    parse_specs,
    segment_table,
)

log = logging.getLogger("mlplatform.drift.quality")

#: Where training logs the labelled reference of a model version (held-out features, ``prediction``
#: and ``label``), and the version tag that may point elsewhere.
QUALITY_REFERENCE_ARTIFACT = "quality/reference.parquet"
TAG_QUALITY_REFERENCE = "mlplatform.quality_reference"
PREDICTION = "prediction"
LABEL = "label"
#: Store-wide lock name of the quality refresh (``:`` cannot occur in a model name).
REFRESH_LOCK = ":quality-refresh"
#: Seconds the start-up check of the segment columns waits for the model registry.
SEGMENT_CHECK_TIMEOUT_S = 20.0
#: Seconds before a labelled reference that could not be loaded is tried again.
REFERENCE_RETRY_S = 300.0
#: Segment values with fewer rows than this are left out of drift-within-segment and disparate impact.
MIN_SEGMENT_ROWS = 30


def performance_state_key(model: str) -> str:
    """The retrain-state key of the performance trigger (``:`` cannot occur in a model name)."""
    return f"{model}:performance"


@dataclass
class VersionReference:
    """What a model version's labelled reference gives: the fitted CBPE and the reference metrics."""

    cbpe: CBPE | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    frame: pd.DataFrame | None = None
    reason: str = ""
    loaded_at: float = field(default_factory=time.monotonic)


class QualityService:
    """Labels, realized and estimated performance, segments, fairness (see the module docstring)."""

    def __init__(self, drift: DriftDataPlane, metrics: QualityMetrics) -> None:
        self.drift = drift
        self.settings = drift.settings
        self.metrics = metrics
        self.specs: dict[str, list[SegmentSpec]] = {
            model: parse_specs(cols, self.settings.segment_bins)
            for model, cols in self.settings.segments.items()
        }
        self._refs: dict[tuple[str, str], VersionReference] = {}
        self._ref_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._refresh_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def store(self) -> Any:  # noqa: ANN401 - the drift store
        assert self.drift.store is not None
        return self.drift.store

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore gauges from the stored results and start the ticker."""
        for model, version in await self.drift._db(self.store.quality_versions):
            await self._export(model, version)
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    def check_segments(self, timeout_s: float = SEGMENT_CHECK_TIMEOUT_S) -> None:
        """Check the segment columns against each configured model's @champion reference (called while
        the app is built, so ``mlplatform serve`` stops with one line): a RuntimeError names a missing
        column. A registry that cannot be reached within ``timeout_s`` (MLflow's client retries for
        minutes) is logged and the check skipped: windows of a version without the column report it
        per segment."""
        import threading

        # a daemon thread: one abandoned on a hung registry never holds up the process's exit
        result: list[list[str]] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                result.append(self._segment_problems())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                errors.append(exc)

        worker = threading.Thread(target=run, name="segment-check", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if errors:
            raise errors[0]
        if not result:
            log.warning(
                "segment columns not checked at start-up: the model registry did not answer in %ss", timeout_s
            )
            return
        problems = result[0]
        if problems:
            raise RuntimeError("; ".join(problems))

    def _segment_problems(self) -> list[str]:
        from mlplatform.drift.detector import DriftDetector

        problems = []
        for model, specs in self.specs.items():
            try:
                client = self.drift._mlflow()
                version = resolve_version(client, ModelRef(model)).version
                det = DriftDetector(model, version, self.settings.drift_dir() / "reference")
                det.load(client)
            except Exception as exc:  # noqa: BLE001 - registry down or model unknown: checked per window
                log.warning("segment columns of %s not checked at start-up: %s", model, exc)
                continue
            missing = missing_columns(specs, det.features)
            if missing:
                problems.append(
                    f"DRIFT_SEGMENTS: model {model!r} (version {version}) has no input column "
                    f"{', '.join(repr(c) for c in missing)}; its columns are {', '.join(det.features)}"
                )
        return problems

    async def _tick(self) -> None:
        await tick_forever(self.refresh, self.settings.quality_interval_s, log, "computing window quality")

    # -- labelled reference ----------------------------------------------------------------------
    async def reference(self, model: str, version: str) -> VersionReference:
        key = (model, version)
        ref = self._refs.get(key)
        if ref is not None and not self._stale(ref):
            return ref
        async with self._ref_locks.setdefault(key, asyncio.Lock()):
            ref = self._refs.get(key)
            if ref is None or self._stale(ref):
                self._refs[key] = await asyncio.to_thread(self._load_reference, model, version)
        return self._refs[key]

    @staticmethod
    def _stale(ref: VersionReference) -> bool:
        """A reference that could not be loaded is tried again after REFERENCE_RETRY_S (the registry may
        have been down, or training may log it late)."""
        return ref.cbpe is None and time.monotonic() - ref.loaded_at > REFERENCE_RETRY_S

    def _load_reference(self, model: str, version: str) -> VersionReference:
        cache = self.settings.drift_dir() / "reference" / model / version / "quality.parquet"
        try:
            if not cache.exists():
                self._download(model, version, cache)
            frame = pd.read_parquet(cache)
        except Exception as exc:  # noqa: BLE001 - no labelled reference: no estimate, no trigger
            reason = f"no labelled reference ({QUALITY_REFERENCE_ARTIFACT}) for {model}/{version}: {exc}"
            log.warning("%s", reason)
            return VersionReference(reason=reason[:300])
        missing = [c for c in (PREDICTION, LABEL) if c not in frame.columns]
        if missing:
            return VersionReference(reason=f"labelled reference of {model}/{version} lacks {missing}")
        p = frame[PREDICTION].to_numpy(dtype=np.float64)
        y = frame[LABEL].to_numpy(dtype=np.int64)
        try:
            cbpe = CBPE(threshold=self.settings.quality_threshold).fit(p, y)
        except ValueError as exc:
            return VersionReference(reason=str(exc), frame=frame)
        ref_metrics = realized_metrics(y, p, self.settings.quality_threshold)
        log.info(
            "labelled reference of %s/%s: %d rows, calibration %s", model, version, len(p), cbpe.calibrated
        )
        return VersionReference(cbpe=cbpe, metrics=ref_metrics, frame=frame)

    def _download(self, model: str, version: str, dest: Path) -> None:
        import mlflow.artifacts

        client = self.drift._mlflow()
        resolved = resolve_version(client, ModelRef(model, alias=None, version=version))
        artifact = resolved.tags.get(TAG_QUALITY_REFERENCE, QUALITY_REFERENCE_ARTIFACT)
        tmp = dest.parent / "quality-download"
        local = mlflow.artifacts.download_artifacts(
            run_id=resolved.run_id,
            artifact_path=artifact,
            dst_path=str(tmp),
            tracking_uri=client.tracking_uri,
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        Path(local).replace(dest)

    # -- labels ----------------------------------------------------------------------------------
    async def add_labels(self, model: str, labels: list[LabelIn]) -> LabelsResponse:
        """Store labels (unknown keys counted and reported, not stored), recompute affected windows."""
        limit = self.settings.max_labels_per_request
        if len(labels) > limit:
            raise PayloadTooLarge(f"labels: {len(labels)} labels exceed the limit of {limit} per request")
        if not labels:
            raise InvalidInput("labels: at least one label is needed")
        known = await self.drift._db(self.store.count_records, model)
        if known == 0:
            raise NotFound(f"model {model!r} has no predictions stored by drift detection")
        rows = [(x.prediction_id, x.row_index, int(x.label)) for x in labels]
        wrote = await self.drift._db(self.store.write_labels, model, rows)
        m = self.metrics.labels
        for result, n in (
            ("accepted", wrote.accepted),
            ("updated", wrote.updated),
            ("duplicate", wrote.duplicates),
            ("unknown", len(wrote.unknown)),
        ):
            if n:
                m.labels(model, result).inc(n)
        if wrote.unknown:
            log.info("%d labels of %s match no stored prediction", len(wrote.unknown), model)
        async with self._refresh_lock:  # not beside a refresh of the same window with older labels
            for window_id in sorted(wrote.windows):
                await self._compute_window(window_id)
            for version in sorted(wrote.versions):
                await self._export(model, version)
                await self._judge(model, version)
        return LabelsResponse(
            accepted=wrote.accepted,
            updated=wrote.updated,
            duplicates=wrote.duplicates,
            unknown=len(wrote.unknown),
            unknown_ids=[f"{p}/{r}" for p, r in wrote.unknown[:20]],
            windows_updated=len(wrote.windows),
        )

    # -- per-window quality ----------------------------------------------------------------------
    async def refresh(self) -> int:
        """Compute the quality of every closed window that has none yet; returns how many."""
        done = 0
        # one replica at a time does the work (the others read its results from the shared store)
        async with self._refresh_lock, self.store.exclusive(REFRESH_LOCK, wait=False) as held:
            if not held:
                return 0
            todo = await self.drift._db(self.store.windows_without_quality, 100)
            touched: set[tuple[str, str]] = set()
            for window_id, model, version in todo:
                try:
                    await self._compute_window(window_id, model, version)
                except Unavailable:
                    raise  # the database: nothing else will work either
                except Exception:  # noqa: BLE001 - one bad window must not hold up the others
                    log.exception(
                        "quality of window %d (%s/%s) failed; tried again later", window_id, model, version
                    )
                    continue
                touched.add((model, version))
                done += 1
            for model, version in sorted(touched):
                await self._export(model, version)
                await self._judge(model, version)
        return done

    async def _compute_window(
        self, window_id: int, model: str | None = None, version: str | None = None
    ) -> None:
        if model is None or version is None:
            found = await self.drift._db(self.store.window_key, window_id)
            if found is None:
                return
            model, version = found
        started = time.perf_counter()
        records = await self.drift._db(self.store.window_predictions, window_id)
        ref = await self.reference(model, version)
        previous = await self.drift._db(self.store.quality_result, window_id)
        specs = self.specs.get(model, [])
        det = None
        if specs:
            try:
                det = await self.drift.detector(model, version)
            except Exception as exc:  # noqa: BLE001 - segments without drift-within-segment this time
                log.warning("reference of %s/%s unavailable for segment drift: %s", model, version, exc)
        result, n, n_labeled = await asyncio.to_thread(
            self._window_result, model, version, records, ref, specs, det, previous
        )
        await self.drift._db(self.store.save_quality, window_id, model, version, n, n_labeled, result)
        self.metrics.quality_seconds.labels(model, version).set(time.perf_counter() - started)

    def _window_result(
        self,
        model: str,
        version: str,
        records: list[tuple[float | None, int | None, dict[str, Any]]],
        ref: VersionReference,
        specs: list[SegmentSpec],
        det: Any,  # noqa: ANN401 - DriftDetector or None
        previous: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], int, int]:
        t = self.settings.quality_threshold
        records = [r for r in records if r[0] is not None and not np.isnan(r[0])]
        p = np.array([r[0] for r in records], dtype=np.float64)
        y = np.array([np.nan if r[1] is None else r[1] for r in records], dtype=np.float64)
        labeled = ~np.isnan(y)
        n_labeled = int(labeled.sum())
        estimated = ref.cbpe.estimate(p) if ref.cbpe is not None and len(p) else None
        realized = realized_metrics(y[labeled].astype(np.int64), p[labeled], t) if n_labeled else None
        error: dict[str, float] = {}
        if estimated and realized:
            for k, v in estimated.items():
                r = realized.get(k)
                if v is not None and r is not None:
                    error[k] = float(v - r)
        metric = self.settings.performance_metric
        dropped: bool | None = None
        base = ref.metrics.get(metric)
        if realized and n_labeled >= self.settings.quality_min_labels and base is not None:
            value = realized.get(metric)
            dropped = None if value is None else bool(value < base - self.settings.performance_drop)
        segments: dict[str, Any] = {}
        if specs:
            inputs = pd.DataFrame.from_records([r[2] for r in records])
            old = (previous or {}).get("segments", {})
            for spec in specs:
                if spec.column not in inputs.columns:
                    segments[spec.name] = {"column": spec.column, "error": f"no input column {spec.column!r}"}
                    continue
                seg = spec.values(inputs[spec.column])
                table = segment_table(seg, p, y, t)
                prior = old.get(spec.name, {}).get("values", {})
                self._segment_drift(spec, seg, inputs, table, det, prior)
                segments[spec.name] = {
                    "column": spec.column,
                    "values": table,
                    "disparate_impact_ratio": disparate_impact(table, MIN_SEGMENT_ROWS),
                    "equal_opportunity_difference": equal_opportunity_difference(table),
                }
        result = {
            "threshold": t,
            "estimated": estimated,
            "realized": realized,
            "estimation_error": error,
            "performance_dropped": dropped,
            "positives": int(np.nansum(y)),
            "detail": {
                "metric": metric,
                "reference": ref.metrics or None,
                "performance_drop": self.settings.performance_drop,
                "min_labels": self.settings.quality_min_labels,
                "cbpe_calibrated": ref.cbpe.calibrated if ref.cbpe is not None else None,
                "cbpe_reference_rows": ref.cbpe.reference_rows if ref.cbpe is not None else None,
                "unavailable": ref.reason or None,
            },
            "segments": segments,
        }
        return result, len(p), n_labeled

    def _segment_drift(
        self,
        spec: SegmentSpec,
        seg: np.ndarray,
        inputs: pd.DataFrame,
        table: dict[str, dict[str, Any]],
        det: Any,  # noqa: ANN401
        prior: dict[str, Any],
    ) -> None:
        """Drift of each segment value against the reference rows of the same value (computed once per
        window: the inputs do not change when labels arrive)."""
        if det is None or det.reference is None:
            return
        ref_frame = det.reference.frame
        ref_seg = spec.values(ref_frame[spec.column]) if spec.column in ref_frame.columns else None
        for value, row in table.items():
            if value in prior and "drift_share" in prior[value]:
                row["drift_share"] = prior[value]["drift_share"]
                row["reference_volume_share"] = prior[value].get("reference_volume_share")
                continue
            row["drift_share"] = None
            row["reference_volume_share"] = None
            if ref_seg is None:
                continue
            in_ref = ref_seg == value
            row["reference_volume_share"] = float(in_ref.mean())
            if row["volume"] < MIN_SEGMENT_ROWS or in_ref.sum() < MIN_SEGMENT_ROWS:
                continue
            current = det.frame(inputs[seg == value].to_dict("records"), [None] * int((seg == value).sum()))
            current = current[[c for c in det.features]]
            features = [c for c in det.features if c != spec.column]
            reference = stats.PreparedReference(ref_frame[in_ref][det.features].reset_index(drop=True))
            try:
                res = stats.dataset_drift(reference, current.reset_index(drop=True), features)
            except Exception:  # noqa: BLE001 - e.g. a constant column; the segment just has no drift value
                log.exception("drift within segment %s=%s failed", spec.name, value)
                continue
            row["drift_share"] = float(res.drift_share)

    # -- gauges and the trigger ------------------------------------------------------------------
    async def _export(self, model: str, version: str) -> None:
        rows: list[QualityRow] = await self.drift._db(self.store.quality_rows, model, 50, version)
        if not rows:
            return
        m = self.metrics
        newest = rows[0]
        res = newest.result
        for k, v in (res.get("estimated") or {}).items():
            if v is not None:
                m.estimated.labels(model, version, k).set(v)
        for k, v in ((res.get("detail") or {}).get("reference") or {}).items():
            if v is not None:
                m.reference.labels(model, version, k).set(v)
        m.labeled_ratio.labels(model, version).set(
            newest.n_labeled / newest.n_records if newest.n_records else 0
        )
        for name, seg in (res.get("segments") or {}).items():
            for value, row in (seg.get("values") or {}).items():
                m.segment_records.labels(model, version, name, value).set(row["volume"])
                m.segment_prediction_rate.labels(model, version, name, value).set(row["prediction_rate"])
                if row.get("drift_share") is not None:
                    m.segment_drift_share.labels(model, version, name, value).set(row["drift_share"])
            if seg.get("disparate_impact_ratio") is not None:
                m.disparate_impact.labels(model, version, name).set(seg["disparate_impact_ratio"])
        labelled = [
            r for r in rows if r.n_labeled >= self.settings.quality_min_labels and r.result.get("realized")
        ]
        if not labelled:
            return
        res = labelled[0].result
        for k, v in res["realized"].items():
            if v is not None:
                m.realized.labels(model, version, k).set(v)
        for k, v in (res.get("estimation_error") or {}).items():
            m.estimation_error.labels(model, version, k).set(v)
        if res.get("performance_dropped") is not None:
            m.performance_drop.labels(model, version).set(1 if res["performance_dropped"] else 0)
        for name, seg in (res.get("segments") or {}).items():
            for value, row in (seg.get("values") or {}).items():
                for k, v in (row.get("realized") or {}).items():
                    if v is not None and row["labeled"] >= MIN_SEGMENT_ROWS:
                        m.segment_realized.labels(model, version, name, value, k).set(v)
            if seg.get("equal_opportunity_difference") is not None:
                m.equal_opportunity.labels(model, version, name).set(seg["equal_opportunity_difference"])

    async def _judge(self, model: str, version: str) -> None:
        """The performance trigger: the run of the newest judged windows (by window order, whatever order
        labels came in) that dropped below the reference; fires once per episode."""
        rows: list[QualityRow] = await self.drift._db(self.store.quality_rows, model, 200, version)
        judged = [r for r in rows if r.result.get("performance_dropped") is not None]
        run = 0
        for r in judged:  # newest first
            if not r.result["performance_dropped"]:
                break
            run += 1
        if not judged:
            return
        key = performance_state_key(model)
        async with self.store.exclusive(key):
            state = await self.drift._db(self.store.retrain_state, key)
            before = (state.consecutive, state.episode_active)
            fire = episode_step(
                state,
                run,
                self.settings.retrain_after_windows,
                self.settings.retrain_cooldown_s,
                time.time(),
            )
            if fire or (state.consecutive, state.episode_active) != before:
                await self.drift._db(self.store.save_retrain_state, state)
            if fire:
                metric = self.settings.performance_metric
                reason = (
                    f"realized {metric} below the reference by more than {self.settings.performance_drop:g} "
                    f"in {run} consecutive labelled windows"
                )
                await self.drift._fire(model, version, reason)

    # -- queries ---------------------------------------------------------------------------------
    async def _refresh_quietly(self) -> None:
        """Bring results up to date before a read; a failure (logged) leaves the stored results to answer."""
        try:
            await self.refresh()
        except Unavailable:
            raise
        except Exception:  # noqa: BLE001
            log.exception("computing window quality before a read failed")

    async def history(self, model: str, limit: int, version: str | None) -> QualityHistory:
        await self.drift._latest_version(model)  # 404 for models nobody knows
        await self._refresh_quietly()
        rows: list[QualityRow] = await self.drift._db(self.store.quality_rows, model, limit, version)
        return QualityHistory(
            model=model,
            metric=self.settings.performance_metric,
            windows=[
                WindowQualityOut(
                    window_id=r.window_id,
                    version=r.version,
                    updated=r.updated,
                    n_records=r.n_records,
                    n_labeled=r.n_labeled,
                    estimated=r.result.get("estimated"),
                    realized=r.result.get("realized"),
                    estimation_error=r.result.get("estimation_error") or {},
                    performance_dropped=r.result.get("performance_dropped"),
                    detail=r.result.get("detail") or {},
                )
                for r in rows
            ],
        )

    async def segments(self, model: str, window_id: int | None) -> SegmentsOut:
        await self.drift._latest_version(model)
        if model not in self.specs:
            raise NotFound(f"no segment columns are configured for model {model!r} (DRIFT_SEGMENTS)")
        await self._refresh_quietly()
        rows: list[QualityRow] = await self.drift._db(self.store.quality_rows, model, 1000, None)
        if window_id is not None:
            rows = [r for r in rows if r.window_id == window_id]
        if not rows:
            raise NotFound(
                f"no closed window{'' if window_id is None else f' {window_id}'} for model {model!r}"
            )
        r = rows[0]
        segs = {}
        for name, seg in (r.result.get("segments") or {}).items():
            if "error" in seg:
                raise InvalidInput(f"segment {name}: {seg['error']}")
            segs[name] = SegmentOut(
                column=seg["column"],
                values={k: SegmentValueOut(**v) for k, v in seg["values"].items()},
                disparate_impact_ratio=seg.get("disparate_impact_ratio"),
                equal_opportunity_difference=seg.get("equal_opportunity_difference"),
            )
        return SegmentsOut(model=model, window_id=r.window_id, version=r.version, segments=segs)
