"""The transport-free drift service ("data plane"): ingest, windows, status, reports, retraining."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from mlplatform.core.errors import NotFound, PlatformError, Unavailable
from mlplatform.core.payloads import InferenceRecord
from mlplatform.core.registry import ModelRef, resolve_version
from mlplatform.drift import multivariate, report_sections, sources, stats
from mlplatform.drift.detector import DriftDetector, prediction_of
from mlplatform.drift.metrics import DriftMetrics
from mlplatform.drift.retrain import RetrainLauncher, TriggerOutcome, episode_step
from mlplatform.drift.schemas import (
    DriftHistory,
    DriftStatus,
    IngestResponse,
    RetrainResponse,
    RetrainStateOut,
    window_out,
)
from mlplatform.drift.settings import DriftSettings
from mlplatform.drift.store import DriftStore, StoredRecord, WindowAlreadyClosed, open_store

log = logging.getLogger("mlplatform.drift")


async def tick_forever(
    step: Callable[[], Awaitable[object]], period_s: float, logger: logging.Logger, what: str
) -> None:
    """Await ``step`` every ``period_s`` seconds until cancelled; a failed step is logged on ``logger``
    as "<what> failed" (with its stack trace) and the next one runs on time."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep ticking; the failure is logged
            logger.exception("%s failed", what)
        await asyncio.sleep(period_s)


T = TypeVar("T")


class DriftDataPlane:
    """Everything drift detection does, driven by the HTTP routes and by tests alike."""

    def __init__(
        self,
        settings: DriftSettings,
        metrics: DriftMetrics,
        *,
        launcher: RetrainLauncher | None = None,
        client_factory: Callable[[], Any] | None = None,
        tracer: trace.Tracer | None = None,
        store: DriftStore | None = None,
    ) -> None:
        self.settings = settings
        self.tracer = tracer
        self.metrics = metrics
        self.launcher = launcher or RetrainLauncher(settings)
        self._client_factory = client_factory
        self._client: Any = None
        self.store: DriftStore | None = store
        self.detectors: dict[tuple[str, str], DriftDetector] = {}
        self.multivariate = multivariate.MultivariateMonitor(
            settings.multivariate, settings.multivariate_models
        )
        self._load_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._ready = False

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.store is None:
            self.store = await asyncio.to_thread(open_store, None, self.settings.drift_dir())
        for row in await self._db(self.store.latest_windows):
            self._export_window(row.model, row.version, row.result, row.n_records)
        for model, version, n, _ in await self._db(self.store.open_versions):
            self.metrics.open_records.labels(model, version).set(n)
        if self.settings.window_mode == "time":
            self._ticker = asyncio.create_task(self._time_windows())
        self._ready = True

    def ready(self) -> bool:
        """Ready once the store is open and the last windows are exported."""
        return self._ready

    async def stop(self) -> None:
        self._ready = False
        if self._ticker is not None:
            self._ticker.cancel()
        await self.launcher.aclose()
        for det in self.detectors.values():
            det.unload()
        if self.store is not None:
            self.store.close()
            self.store = None

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:  # noqa: ANN401
        """Run one store call in a worker thread; an unreachable database becomes a 503.

        A connection the server closed (a PostgreSQL restart or failover) fails its next call; that call
        is made once more, on a fresh connection, before the caller sees a 503. Every store call is
        safe to repeat: inserts ignore records already stored, window closing is one transaction.
        """
        try:
            try:
                return await asyncio.to_thread(fn, *args)
            except psycopg.OperationalError:
                return await asyncio.to_thread(fn, *args)
        except psycopg.Error as exc:
            log.warning(
                "drift database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc) else exc
            )
            raise Unavailable("drift detection's database is unavailable; retry later") from exc

    def _mlflow(self) -> Any:  # noqa: ANN401
        if self._client is None:
            if self._client_factory is not None:
                self._client = self._client_factory()
            else:
                from mlplatform.core.registry import mlflow_client

                self._client = mlflow_client(self.settings.resolved_tracking_uri())
        return self._client

    async def detector(self, model: str, version: str) -> DriftDetector:
        """The loaded detector of a model version (404 when the registry does not know it); a stream key
        (``3@batch``) gets its registry version's detector."""
        version = sources.registry_version(version)
        key = (model, version)
        det = self.detectors.get(key)
        if det is not None:
            return det
        lock = self._load_locks.setdefault(key, asyncio.Lock())
        async with lock:
            det = self.detectors.get(key)
            if det is None:
                det = DriftDetector(model, version, self.settings.drift_dir() / "reference")
                try:
                    await asyncio.to_thread(lambda: det.load(self._mlflow()))
                except PlatformError:
                    raise
                except Exception as exc:  # registry/artifact store unreachable: the sender retries
                    log.exception("could not load the reference of %s/%s", model, version)
                    raise Unavailable(
                        f"reference data of model {model!r} version {version!r} could not be loaded from the "
                        "model registry; retry later"
                    ) from exc
                self.detectors[key] = det
        return det

    # -- ingest ----------------------------------------------------------------------------------
    async def ingest(self, records: Sequence[InferenceRecord]) -> IngestResponse:
        """Validate every record first (all or nothing), store new ones, close full windows."""
        assert self.store is not None
        groups: dict[tuple[str, str], list[InferenceRecord]] = {}
        columns: dict[tuple[str, str], list[dict[str, Any]]] = {}  # each record's drift-tested columns
        for rec in records:  # batch rows are windowed apart from online traffic (drift/sources.py)
            groups.setdefault((rec.model, sources.stream_version(rec.version, rec.source)), []).append(rec)
        for (model, version), recs in groups.items():
            try:
                det = await self.detector(model, version)
            except NotFound:
                # the label is not the client-supplied name: unknown names must not grow the series
                self.metrics.rejected.labels("", "unknown_model").inc(len(recs))
                raise NotFound(f"model {model!r} version {version!r} is not in the registry") from None
            columns[(model, version)] = [det.columns_of(r.inputs, r.outputs) for r in recs]
            try:
                det.validate(columns[(model, version)], self.settings.ignored_columns())
            except Exception:
                self.metrics.rejected.labels(model, "schema").inc(len(recs))
                raise
        accepted = 0
        name = self.settings.prediction_output
        rows: list[StoredRecord] = []
        for (model, version), recs in groups.items():
            rows += [
                StoredRecord(
                    r.prediction_id or r.request_id,
                    r.row_index,
                    model,
                    version,
                    r.timestamp,
                    cols,
                    prediction_of(r.outputs, name),
                    r.request_id,
                )
                for r, cols in zip(recs, columns[(model, version)], strict=True)
            ]
        # one transaction for the whole request: all records are stored, or none (the sender retries)
        new_counts = await self._db(self.store.insert_records, rows)
        for (model, version), recs in groups.items():
            new = new_counts.get((model, version), 0)
            accepted += new
            self.metrics.ingested.labels(model, version).inc(new)
            if len(recs) - new:
                self.metrics.duplicates.labels(model, version).inc(len(recs) - new)
        closed = 0
        if self.settings.window_mode == "count":
            for model, version in groups:
                closed += await self._close_count_windows(model, version)
        else:
            for model, version in groups:
                n_open = await self._db(self.store.open_count, model, version)
                self.metrics.open_records.labels(model, version).set(n_open)
        self._continue_traces(records)
        return IngestResponse(accepted=accepted, duplicates=len(records) - accepted, windows_closed=closed)

    def _continue_traces(self, records: Sequence[InferenceRecord], limit: int = 64) -> None:
        """Record a consumer span in each inference's own trace (records arrive batched, off-request).

        The payload logger posts batches from a background task, so the HTTP request's span belongs to
        no inference. Each record carries its inference's trace and span id; one child span per distinct
        inference (at most ``limit`` per batch) keeps serving -> drift in one trace in Tempo and tags the
        ingest log line with that trace id.
        """
        if self.tracer is None:
            return
        parents: dict[tuple[str, str], int] = {}
        for rec in records:
            if rec.trace_id and rec.span_id:
                key = (rec.trace_id, rec.span_id)
                if key in parents or len(parents) < limit:
                    parents[key] = parents.get(key, 0) + 1
        for (trace_id, span_id), n in parents.items():
            try:
                parent = SpanContext(
                    int(trace_id, 16),
                    int(span_id, 16),
                    is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                )
            except ValueError:
                continue
            if not parent.is_valid:
                continue
            ctx = trace.set_span_in_context(NonRecordingSpan(parent))
            with self.tracer.start_as_current_span(
                "drift.ingest_records", context=ctx, kind=SpanKind.CONSUMER
            ) as sp:
                sp.set_attribute("mlplatform.records", n)
        if parents:
            # one line per batch; trace_ids lets Loki find the batch from any inference's trace
            log.info(
                "ingested payload records of %d traced inference(s)",
                len(parents),
                extra={"trace_ids": sorted({t for t, _ in parents})},
            )

    # -- windows ---------------------------------------------------------------------------------
    async def _close_count_windows(self, model: str, version: str) -> int:
        """Count mode: evaluate full windows of the oldest open records, once across replicas."""
        assert self.store is not None
        closed = 0
        size = self.settings.window_size
        n_open = await self._db(self.store.open_count, model, version)
        try:
            if n_open >= size:  # the lock only when a window may be due; held elsewhere: that holder
                # re-checks until no full window is left, so this ingest need not wait for it
                async with self.store.exclusive(model, wait=False) as held:
                    while held and (n_open := await self._db(self.store.open_count, model, version)) >= size:
                        rows = await self._db(self.store.oldest_open, model, version, size)
                        if len(rows) < size:  # the counter disagrees with the records: never a short window
                            log.error(
                                "open-record count of %s/%s is %d but %d records are open",
                                model,
                                version,
                                n_open,
                                len(rows),
                            )
                            break
                        await self._evaluate(model, version, rows)
                        closed += 1
        except Exception:  # noqa: BLE001 - records are stored; a failed evaluation must not fail ingest
            log.exception("evaluating a window of %s/%s failed; records stay open", model, version)
        self.metrics.open_records.labels(model, version).set(n_open)
        return closed

    async def _time_windows(self) -> None:
        period = min(max(self.settings.window_seconds / 4, 0.2), 5.0)
        await tick_forever(self.close_due_time_windows, period, log, "closing time windows")

    async def close_due_time_windows(self, now: float | None = None) -> int:
        """Time mode: evaluate every version whose oldest open record is a full window old."""
        assert self.store is not None
        now = time.time() if now is None else now
        closed = 0
        for model, version, n, oldest in await self._db(self.store.open_versions):
            if now - oldest < self.settings.window_seconds or n < self.settings.min_window_records:
                continue
            async with self.store.exclusive(model):
                # another replica may have closed it while this one waited for the lock
                again = [
                    o for m, v, _, o in await self._db(self.store.open_versions) if (m, v) == (model, version)
                ]
                if not again or now - again[0] < self.settings.window_seconds:
                    continue
                rows = await self._db(self.store.oldest_open, model, version, None)
                if len(rows) < self.settings.min_window_records:
                    continue
                await self._evaluate(model, version, rows)
                closed += 1
        return closed

    async def _evaluate(self, model: str, version: str, rows: list[tuple[int, StoredRecord]]) -> None:
        assert self.store is not None
        det = await self.detector(model, version)
        recs = [r for _, r in rows]
        start = time.perf_counter()
        current = det.frame([r.inputs for r in recs], [r.prediction for r in recs])
        result = await asyncio.to_thread(det.detect, current, self.settings.drift_share)
        elapsed = time.perf_counter() - start
        summary = stats.as_json(result)
        mv = await self._multivariate(det, current)
        if mv is not None:
            summary["multivariate"] = multivariate.as_json(mv)
        opened = min(r.ts for r in recs)
        try:
            await self._db(
                self.store.close_window,
                model,
                version,
                [i for i, _ in rows],
                opened,
                result.drift_share,
                result.dataset_drift,
                summary,
            )
        except WindowAlreadyClosed:
            log.warning("a window of %s/%s was closed elsewhere meanwhile; not counted twice", model, version)
            return
        self.metrics.windows.labels(model, version).inc()
        self.metrics.compute_seconds.labels(model, version).set(elapsed)
        self._export_window(model, version, summary, len(rows))
        log.info(
            "window closed for %s/%s: %d records, drift share %.2f, dataset drift %s",
            model,
            version,
            len(rows),
            result.drift_share,
            result.dataset_drift,
        )
        if sources.source_of(version) == sources.ONLINE:  # batch windows leave the retraining episode alone
            await self._after_window(model, version, result.dataset_drift)

    async def _multivariate(self, det: DriftDetector, current: Any) -> multivariate.MultivariateDrift | None:  # noqa: ANN401
        """The window's multivariate tests (None when off for the model); a failure is logged, not raised:
        the per-column result still closes the window."""
        assert det.reference is not None
        try:
            return await asyncio.to_thread(
                self.multivariate.detect, det.model, det.version, det.reference.frame, det.features, current
            )
        except Exception:  # noqa: BLE001
            log.exception(
                "multivariate drift of %s/%s failed; window closed without it", det.model, det.version
            )
            return None

    def _export_window(self, model: str, version: str, summary: dict[str, Any], n: int) -> None:
        m = self.metrics
        cols = dict(summary["features"])
        if summary.get("prediction"):
            cols["prediction"] = summary["prediction"]
        for name, col in cols.items():
            m.score.labels(model, version, name, col["method"]).set(col["statistic"])
            m.drifted.labels(model, version, name).set(1 if col["drifted"] else 0)
            if col.get("psi") is not None:
                m.psi.labels(model, version, name).set(col["psi"])
            for descriptor, values in (col.get("descriptors") or {}).items():
                for window, value in values.items():
                    m.text_descriptor.labels(model, version, name, descriptor, window).set(value)
        for method, res in (summary.get("multivariate") or {}).get("methods", {}).items():
            m.mv_score.labels(model, version, method).set(res["statistic"])
            m.mv_threshold.labels(model, version, method).set(res["threshold"])
            m.mv_drifted.labels(model, version, method).set(1 if res["drifted"] else 0)
            m.mv_seconds.labels(model, version, method).set(res["seconds"])
            if res.get("p_value") is not None:
                m.mv_p_value.labels(model, version, method).set(res["p_value"])
        m.share.labels(model, version).set(summary["drift_share"])
        m.dataset.labels(model, version).set(1 if summary["dataset_drift"] else 0)
        m.window_size.labels(model, version).set(n)

    # -- retraining ------------------------------------------------------------------------------
    async def _after_window(self, model: str, version: str, drifted: bool) -> None:
        """Count consecutive drifted windows; fire once per episode (and not within the cool-down)."""
        assert self.store is not None
        state = await self._db(self.store.retrain_state, model)
        active = state.episode_active
        fire = episode_step(
            state,
            state.consecutive + 1 if drifted else 0,
            self.settings.retrain_after_windows,
            self.settings.retrain_cooldown_s,
            time.time(),
        )
        await self._db(self.store.save_retrain_state, state)
        if fire:
            await self._fire(model, version, f"dataset drift in {state.consecutive} consecutive windows")
        elif drifted and not active and state.consecutive >= self.settings.retrain_after_windows:
            log.info("drift persists for %s but retraining is cooling down", model)

    async def _fire(self, model: str, version: str, reason: str) -> TriggerOutcome:
        assert self.store is not None
        outcome = await self.launcher.launch(model, version, reason)
        self.metrics.retrains.labels(model, outcome.mode, outcome.outcome).inc()
        await self._db(
            self.store.add_retrain_event,
            model,
            version,
            reason,
            outcome.mode,
            outcome.outcome,
            outcome.detail,
        )
        log.warning(
            "retraining trigger for %s/%s (%s): %s %s",
            model,
            version,
            reason,
            outcome.outcome,
            outcome.detail,
        )
        return outcome

    async def retrain(self, model: str, version: str | None, reason: str) -> RetrainResponse:
        """Start retraining now (admin route); records the trigger like an automatic one."""
        assert self.store is not None
        version = sources.registry_version(version or await self._latest_version(model))
        async with self.store.exclusive(model):
            state = await self._db(self.store.retrain_state, model)
            state.last_trigger = time.time()
            await self._db(self.store.save_retrain_state, state)
            outcome = await self._fire(model, version, f"manual: {reason}")
        return RetrainResponse(model=model, mode=outcome.mode, outcome=outcome.outcome, detail=outcome.detail)

    async def retrain_events(self, model: str) -> list[dict[str, Any]]:
        assert self.store is not None
        return await self._db(self.store.retrain_events, model)

    # -- queries ---------------------------------------------------------------------------------
    async def _latest_version(self, model: str) -> str:
        """Last version seen in a window or record; else the registry's champion; else 404."""
        assert self.store is not None
        windows = await self._db(self.store.windows, model, 1)
        if windows:
            return windows[0].version
        open_versions = [v for m, v, _, _ in await self._db(self.store.open_versions) if m == model]
        if open_versions:
            return open_versions[-1]
        try:
            resolved = await asyncio.to_thread(lambda: resolve_version(self._mlflow(), ModelRef(model)))
        except ValueError:
            raise NotFound(f"model {model!r} is not known to drift detection") from None
        return resolved.version

    async def status(self, model: str) -> DriftStatus:
        assert self.store is not None
        await self._latest_version(model)  # 404 for models nobody knows
        windows = await self._db(self.store.windows, model, 1)
        state = await self._db(self.store.retrain_state, model)
        open_versions = await self._db(self.store.open_versions)
        return DriftStatus(
            model=model,
            window=window_out(windows[0]) if windows else None,
            open_records={v: n for m, v, n, _ in open_versions if m == model},
            retraining=RetrainStateOut(
                consecutive_drift_windows=state.consecutive,
                episode_active=state.episode_active,
                last_trigger=state.last_trigger,
            ),
        )

    async def history(self, model: str, limit: int) -> DriftHistory:
        assert self.store is not None
        await self._latest_version(model)
        windows = await self._db(self.store.windows, model, limit)
        return DriftHistory(model=model, windows=[window_out(w) for w in windows])

    async def report_html(self, model: str) -> str:
        """Evidently's HTML report for the last closed window (or the open one if none closed yet)."""
        assert self.store is not None
        version = await self._latest_version(model)
        windows = await self._db(self.store.windows, model, 1)
        if windows:
            recs = await self._db(self.store.window_records, windows[0].id)
        else:
            recs = [r for _, r in await self._db(self.store.oldest_open, model, version, None)]
        if not recs:
            raise NotFound(f"no records received yet for model {model!r}; nothing to report")
        det = await self.detector(model, recs[0].version)
        current = det.frame([r.inputs for r in recs], [r.prediction for r in recs])
        result = await asyncio.to_thread(det.detect, current, self.settings.drift_share)
        page = await asyncio.to_thread(det.report_html, current, result, self.settings.report_max_rows)
        mv = await self._multivariate(det, current)
        section = report_sections.multivariate_section(multivariate.as_json(mv) if mv is not None else None)
        return report_sections.insert_sections(page, [section])

    async def models(self) -> list[str]:
        assert self.store is not None
        return await self._db(self.store.known_models)
