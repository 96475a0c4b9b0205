"""The transport-free explainability service object that routes and tests drive.

It resolves each configured model reference exactly like serving does (``core.registry``), keeps one
explainer per model version in an LRU cache, re-resolves aliases on a schedule (an alias moved to a new
version gets a new explainer, built before it is switched to), and turns V2 requests into SHAP
explanations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from mlplatform.core.app import settle_heap
from mlplatform.core.errors import InvalidInput, NotFound, PlatformError, Unavailable
from mlplatform.core.registry import ModelRef, ResolvedVersion, mlflow_client, resolve_version
from mlplatform.core.secrets import SecretsBackend
from mlplatform.explain.explainers import ShapExplainer, choose_explainer
from mlplatform.explain.inputs import feature_matrix
from mlplatform.explain.loader import load_model_version
from mlplatform.explain.metrics import ExplainMetrics
from mlplatform.explain.settings import ExplainSettings
from mlplatform.explain.text import TextModel, TextShapExplainer, explain_text
from mlplatform.features.client import build_feature_client
from mlplatform.features.enrich import FeatureEnricher
from mlplatform.v2.codec import parse_infer_request

log = logging.getLogger("mlplatform.explain")

CACHE_EXPLAINER = "explainer"
CACHE_IMPORTANCE = "importance"


class ExplainDataPlane:
    """Explainers for the configured models and the explain/importance operations; owns the
    feature-store client it builds from settings (closed on :meth:`stop`)."""

    def __init__(
        self,
        settings: ExplainSettings,
        metrics: ExplainMetrics,
        *,
        secrets: SecretsBackend,
        registry: CollectorRegistry,
        feature_client: Any | None = None,
        mlflow: Any | None = None,
    ) -> None:
        self._owned_client = None
        if feature_client is None:
            feature_client = self._owned_client = build_feature_client(settings, secrets, registry)
        self.settings = settings
        self.metrics = metrics
        self.enricher = FeatureEnricher(
            feature_client,
            deadline_s=settings.resolved_feature_deadline_s(),
            url_setting=settings.feature_store_url_setting,
            action="explanation",
        )
        self.refs: dict[str, ModelRef] = {r.name: r for r in settings.model_refs()}
        self._client = mlflow
        self._current: dict[str, ResolvedVersion] = {}
        self._cache: OrderedDict[tuple[str, str], ShapExplainer] = OrderedDict()
        self._failed: dict[tuple[str, str], PlatformError] = {}
        self._build_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._unloading: set[asyncio.Future[None]] = set()
        self._work_dir: Path | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._ready = False

    # lifecycle -------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mlflow_client(self.settings.resolved_tracking_uri())
        return self._client

    def ready(self) -> bool:
        """Ready once every configured model has a current version with a built explainer (or a 422)."""
        return self._ready

    async def start(self, wait: bool = False) -> None:
        """Resolve and build every configured model in the background (``wait``: before returning),
        then keep re-resolving aliases every ``poll_interval_s``. Readiness turns true after the first
        complete load."""
        self._work_dir = Path(tempfile.mkdtemp(prefix="mlplatform-explain-"))
        if wait:
            await self.refresh()
        self._poll_task = asyncio.create_task(self._poll(first=not wait), name="explain-alias-poll")

    async def stop(self) -> None:
        """Stop polling and unload every explainer."""
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        for explainer in self._cache.values():
            self._unload(explainer)
        self._cache.clear()
        if self._unloading:  # every explainer released before returning, as before
            await asyncio.gather(*self._unloading, return_exceptions=True)  # failures: logged by _unloaded
        if self._owned_client is not None:
            await self._owned_client.aclose()
            self.enricher.client = self._owned_client = None
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    async def _poll(self, first: bool) -> None:
        if first:
            await self._safe_refresh()
        interval = self.settings.poll_interval_s
        while self._ready is False or interval > 0:
            # until the first complete load, retry sooner than the alias poll interval
            await asyncio.sleep(interval if self._ready else min(interval or 5.0, 5.0))
            await self._safe_refresh()

    async def _safe_refresh(self) -> None:
        try:
            await self.refresh()
        except Exception:  # keep polling whatever happens
            log.exception("refreshing model versions failed")

    async def refresh(self) -> None:
        """Re-resolve every reference; build the explainer of a changed version before switching to it."""
        ok = True
        for name, ref in self.refs.items():
            try:
                resolved = await asyncio.to_thread(resolve_version, self.client, ref)
                previous = self._current.get(name)
                if previous is None or previous.version != resolved.version:
                    try:
                        await self._get(resolved)
                    except PlatformError as exc:
                        if exc.status_code != 422:
                            raise
                        log.warning("model %s cannot be explained: %s", ref, exc.message)
                    self._current[name] = resolved
                    self._evict()  # the version left behind, now that it is not current
                    if previous is not None:
                        log.info(
                            "model %s moved from version %s to %s", ref, previous.version, resolved.version
                        )
            except Exception as exc:
                ok = False
                log.error("cannot load model %s for explanation: %s", ref, exc)
        if ok:
            self._ready = True

    # explainers ------------------------------------------------------------------------------
    async def explainer_for(self, name: str, version: str | None = None) -> ShapExplainer:
        """The explainer of the version serving uses; ``version``, when given, must be that version."""
        ref = self.refs.get(name)
        if ref is None:
            raise NotFound(f"model '{name}' is not served (not in EXPLAIN_MODELS)")
        resolved = self._current.get(name)
        if resolved is None:
            raise Unavailable(f"model '{name}' is not loaded yet")
        if version is not None and version != resolved.version:
            raise NotFound(
                f"model '{name}' version {version} is not loaded (serving version {resolved.version})"
            )
        return await self._get(resolved)

    async def _get(self, resolved: ResolvedVersion) -> ShapExplainer:
        key = (resolved.name, resolved.version)
        explainer = self._cache.get(key)
        if explainer is not None:
            self._cache.move_to_end(key)
            self.metrics.cache(resolved.name, CACHE_EXPLAINER, True)
            return explainer
        if key in self._failed:
            raise self._failed[key]
        lock = self._build_locks.setdefault(key, asyncio.Lock())
        async with lock:
            explainer = self._cache.get(key)
            if explainer is not None:
                self.metrics.cache(resolved.name, CACHE_EXPLAINER, True)
                return explainer
            if key in self._failed:
                raise self._failed[key]
            self.metrics.cache(resolved.name, CACHE_EXPLAINER, False)
            try:
                explainer = await asyncio.to_thread(self._build, resolved)
            except PlatformError as exc:
                if exc.status_code == 422:  # no explainer / unusable signature or reference: permanent
                    self._failed[key] = exc
                raise
            self._cache[key] = explainer
            self._evict(keep=key)  # refresh builds a new version before it becomes current
            settle_heap()  # the explainer's objects leave the collector's generations (no full-GC stalls)
            return explainer

    def _build(self, resolved: ResolvedVersion) -> ShapExplainer:
        start = time.perf_counter()
        work_dir = self._work_dir or Path(tempfile.mkdtemp(prefix="mlplatform-explain-"))
        self._work_dir = work_dir
        loaded = load_model_version(self.client, resolved, work_dir)
        if isinstance(loaded, TextModel):
            explainer: Any = TextShapExplainer(loaded, self.settings)
        else:
            explainer = choose_explainer(loaded, self.settings)
        explainer.load()
        elapsed = time.perf_counter() - start
        self.metrics.build.labels(resolved.name, resolved.version, explainer.kind).observe(elapsed)
        log.info(
            "built %s explainer for %s/%s in %.2fs",
            explainer.kind,
            resolved.name,
            resolved.version,
            elapsed,
            extra={"model": resolved.name, "version": resolved.version, "explainer": explainer.kind},
        )
        return explainer

    def _evict(self, keep: tuple[str, str] | None = None) -> None:
        """Unload least recently used explainers over the cache size, never a current version's or ``keep``."""
        current = {(r.name, r.version) for r in self._current.values()} | {keep}
        while len(self._cache) > self.settings.explainer_cache_size:
            victim = next((k for k in self._cache if k not in current), None)
            if victim is None:
                return
            self._unload(self._cache.pop(victim))

    def _unload(self, explainer: ShapExplainer) -> None:
        """Unload ``explainer`` in a worker thread, not waiting: unloading waits for a running explanation
        (the explainer's lock), which would stall the event loop. A request that fetched it before and
        explains after gets a 422 (its explainer was unloaded); stop() awaits the pending unloads."""
        future = asyncio.get_running_loop().run_in_executor(None, explainer.unload)
        self._unloading.add(future)
        future.add_done_callback(self._unloaded)

    def _unloaded(self, future: asyncio.Future[None]) -> None:
        self._unloading.discard(future)
        exc = None if future.cancelled() else future.exception()
        if exc is not None:  # retrieved here, so asyncio does not report it as never retrieved
            log.error("unloading an explainer failed: %s", exc, exc_info=exc)

    def cached_versions(self) -> list[tuple[str, str]]:
        """(name, version) of every cached explainer, least recently used first."""
        return list(self._cache)

    def current_version(self, name: str) -> str | None:
        """The version serving uses for ``name`` as last resolved."""
        resolved = self._current.get(name)
        return resolved.version if resolved else None

    # operations ------------------------------------------------------------------------------
    async def explain(
        self,
        name: str,
        body: bytes,
        *,
        version: str | None = None,
        top_k: int | None = None,
        request_id: str = "",
    ) -> dict[str, Any]:
        """SHAP explanation of every row of a V2 request body (the ExplainResponse document)."""
        explainer = await self.explainer_for(name, version)
        req = parse_infer_request(body, max_rows=self.settings.max_rows)
        if isinstance(explainer, TextShapExplainer):  # token attributions (TextExplainResponse)
            return await explain_text(explainer, req, self.settings, self.metrics, request_id)
        k = self._top_k(top_k, req.parameters, len(explainer.feature_names))
        model = explainer.model
        matrix = await feature_matrix(req, model, self.enricher)
        start = time.perf_counter()
        result = await asyncio.to_thread(explainer.explain, matrix)
        elapsed = time.perf_counter() - start
        self.metrics.latency.labels(name, explainer.kind).observe(elapsed)
        self.metrics.rows.labels(name, explainer.kind).inc(len(matrix))
        return {
            "id": req.id or request_id,
            "model_name": name,
            "model_version": model.version,
            "explainer": explainer.kind,
            "output_space": explainer.output_space,
            "feature_perturbation": explainer.feature_perturbation,
            "top_k": k,
            "explanations": _rows(explainer.feature_names, matrix, result, k),
        }

    async def importance(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Global mean |SHAP| per feature over the reference sample (the ImportanceResponse body)."""
        explainer = await self.explainer_for(name, version)
        if isinstance(explainer, TextShapExplainer):
            raise InvalidInput(
                f"model {explainer.model.label} is a text model: no global importance, use /explain"
            )
        self.metrics.cache(name, CACHE_IMPORTANCE, explainer.importance_cached)
        values, rows = await asyncio.to_thread(explainer.importance)
        order = np.argsort(-values, kind="stable")
        return {
            "model_name": name,
            "model_version": explainer.model.version,
            "explainer": explainer.kind,
            "output_space": explainer.output_space,
            "rows": rows,
            "features": [
                {"name": explainer.feature_names[i], "mean_abs_attribution": float(values[i])} for i in order
            ],
        }

    def _top_k(self, query: int | None, parameters: dict[str, Any], n_features: int) -> int:
        value: Any = query
        field = "top_k"
        if value is None and "top_k" in parameters:
            value, field = parameters["top_k"], "parameters.top_k"
        if value is None:
            value = self.settings.default_top_k
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{field}: must be a positive integer, got {value!r}")
        return min(value, n_features)


def _rows(names: list[str], matrix: np.ndarray, result: Any, k: int) -> list[dict[str, Any]]:
    attributions = result.attributions
    order = np.argsort(-np.abs(attributions), axis=1, kind="stable")[:, :k]
    base = float(result.base_value)
    out = []
    for i in range(matrix.shape[0]):
        row_values = matrix[i].tolist()
        row_attr = attributions[i].tolist()
        entries = [
            {"name": n, "value": v, "attribution": a}
            for n, v, a in zip(names, row_values, row_attr, strict=True)
        ]
        out.append(
            {
                "prediction": float(result.predictions[i]),
                "output": float(result.outputs[i]),
                "base_value": base,
                "attributions": entries,
                "top_features": [entries[j] for j in order[i]],
            }
        )
    return out
