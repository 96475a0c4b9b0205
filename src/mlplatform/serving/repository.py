"""The set of served models: load from the MLflow registry, poll aliases, hot-swap atomically.

Each configured reference (``name``, ``name@alias``, ``name/version``) gets a slot. At start the
repository resolves and loads every slot, retrying with exponential back-off while the registry is
unreachable (the service stays not-ready). A poller re-resolves alias references; when an alias
moves, the new version is downloaded, loaded, checked and warmed off the event loop, then swapped in
with one assignment. Requests already queued on the old version finish on it (its batcher drains)
before it is unloaded. If the registry goes away after start the loaded models keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from mlplatform.core.app import settle_heap
from mlplatform.core.errors import NotFound
from mlplatform.core.registry import (
    TAG_FEATURE_SERVICE,
    ModelRef,
    ResolvedVersion,
    mlflow_client,
    registry_client,
    resolve_version,
)
from mlplatform.features.enrich import entity_keys_from_tags, request_keys
from mlplatform.serving import cache
from mlplatform.serving.batching import AdaptiveBatcher
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.runtimes import LoadedModel, load_local_model, load_prepared
from mlplatform.serving.settings import ServingSettings

log = logging.getLogger("mlplatform.serving.repository")


@dataclass
class ModelHandle:
    """A loaded model version and the batcher in front of it (swapped as one unit)."""

    model: LoadedModel
    batcher: AdaptiveBatcher


@dataclass
class Slot:
    ref: ModelRef
    handle: ModelHandle | None = None
    last_error: str | None = None
    attempts: int = 0


class ModelRepository:
    """Loads, serves, polls and swaps the configured models."""

    def __init__(self, settings: ServingSettings, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracking_uri = settings.resolved_tracking_uri()
        self.slots: dict[str, Slot] = {r.name: Slot(r) for r in settings.model_refs()}
        self._tasks: list[asyncio.Task[None]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing = False
        self._client: Any = None

    # ----- queries ------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True once every configured model is loaded and warmed."""
        return bool(self.slots) and all(s.handle is not None for s in self.slots.values())

    def get(self, name: str) -> ModelHandle:
        slot = self.slots.get(name)
        if slot is None:
            raise NotFound(f"model '{name}' is not served here (served: {', '.join(self.slots)})")
        if slot.handle is None:
            from mlplatform.core.errors import Unavailable

            detail = f": {slot.last_error}" if slot.last_error else ""
            raise Unavailable(f"model '{name}' is not loaded yet{detail}")
        return slot.handle

    # ----- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin loading every model in the background, then poll aliases."""
        for name in self.slots:
            self._locks[name] = asyncio.Lock()
            self._tasks.append(asyncio.create_task(self._initial_load(name), name=f"load-{name}"))
        if self.settings.poll_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._poll_loop(), name="alias-poller"))

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop the background tasks and drain every batcher."""
        self._closing = True
        cache.terminate_children()  # a prepare child must not hold the shutdown up
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for slot in self.slots.values():
            if slot.handle is not None:
                await slot.handle.batcher.close(drain_timeout_s)
                slot.handle.model.unload()

    async def _initial_load(self, name: str) -> None:
        delay = self.settings.load_retry_initial_s
        while not self._closing and self.slots[name].handle is None:
            try:
                await self.reload(name, force=False)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - registry down, model missing, bad model: retry
                slot = self.slots[name]
                slot.attempts += 1
                slot.last_error = _describe(exc)
                log.warning(
                    "loading model %s failed (attempt %d): %s; retrying in %.1fs",
                    slot.ref,
                    slot.attempts,
                    slot.last_error,
                    delay,
                )
                await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
                delay = min(delay * 2, self.settings.load_retry_max_s)

    async def _poll_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.settings.poll_interval_s)
            await self.poll_once()

    async def poll_once(self) -> list[str]:
        """Re-resolve alias references; load and swap in any that moved. Returns swapped names."""
        swapped = []
        for name, slot in self.slots.items():
            if slot.ref.version is not None or slot.handle is None:
                continue
            try:
                if await self.reload(name, force=False):
                    swapped.append(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving what is loaded
                slot.last_error = _describe(exc)
                log.warning(
                    "alias poll for %s failed: %s; still serving the loaded version",
                    slot.ref,
                    slot.last_error,
                )
        return swapped

    async def reload(self, name: str, *, force: bool = True) -> bool:
        """Resolve ``name``'s reference; load and swap when the version changed (or ``force``)."""
        slot = self.slots.get(name)
        if slot is None:
            raise NotFound(f"model '{name}' is not served here (served: {', '.join(self.slots)})")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            current = slot.handle
            try:
                resolved = await asyncio.to_thread(self._resolve, slot.ref)
            except Exception:
                if current is None:  # nothing loaded yet: the model cannot serve (ServingModelNotLoaded)
                    self.metrics.load_failures.labels(name).inc()
                raise
            if current is not None and current.model.version == resolved.version and not force:
                return False
            start = time.perf_counter()
            try:
                model = await asyncio.to_thread(self._load, resolved, slot.ref)
            except Exception:
                self.metrics.load_failures.labels(name).inc()
                raise
            self.metrics.load_duration.labels(name).observe(time.perf_counter() - start)
            handle = ModelHandle(model=model, batcher=self._batcher(model))
            slot.handle = handle  # the atomic swap: new requests see the new version from here on
            slot.last_error = None
            old = (current.model.version, current.model.runtime.name) if current else None
            self.metrics.set_model_info(name, model.version, model.runtime.name, old)
            log.info(
                "serving %s version %s (%s)",
                name,
                model.version,
                model.runtime.name,
                extra={"model": name, "version": model.version},
            )
        if current is not None:
            await current.batcher.close()
            current.model.unload()
        settle_heap()  # the new model's objects leave the collector's generations (no full-GC stalls)
        return True

    # ----- blocking helpers (run in threads) ---------------------------------------------------

    def _mlflow(self) -> Any:
        """The registry client: REST for an http(s) tracking server (no mlflow import), else MlflowClient."""
        if self._client is None:
            self._client = registry_client(self.tracking_uri)
        return self._client

    def _resolve(self, ref: ModelRef) -> ResolvedVersion:
        return resolve_version(self._mlflow(), ref)

    def _load(self, resolved: ResolvedVersion, ref: ModelRef) -> LoadedModel:
        s = self.settings
        if s.runtime == "native":
            model = self._load_in_process(resolved)
        else:
            model = self._load_prepared(resolved)
        model.alias = ref.alias if ref.version is None else None
        if (scheduler := getattr(model.runtime, "scheduler", None)) is not None:  # text generation models
            scheduler.metrics = self.metrics.generation
        model.feature_service = resolved.tags.get(TAG_FEATURE_SERVICE)
        model.entity_keys = entity_keys_from_tags(resolved.tags)
        # once per version, in this loading thread (the contract's keys import pandas), not per request
        model.request_keys = request_keys(model.feature_service, model.entity_keys)
        return model

    def _load_prepared(self, resolved: ResolvedVersion) -> LoadedModel:
        """From the pod's cache entry, prepared by a child process when missing or corrupted."""
        s = self.settings
        cache_dir = s.resolved_cache_dir()
        name, version = resolved.name, resolved.version
        entry = None
        for attempt in (1, 2):
            try:
                entry = cache.read_entry(cache_dir, name, version, s.runtime, s.onnx_tolerance)
                break
            except cache.CacheError as exc:
                if attempt == 2:
                    raise RuntimeError(
                        f"cache entry of {name}/{version} unusable after preparing it: {exc}"
                    ) from None
                if str(exc) != "no cache entry":
                    log.warning("cache entry of %s/%s discarded (%s); preparing it again", name, version, exc)
                cache.discard(cache_dir, name, version, artefact="artefact" in str(exc))
            try:
                cache.run_prepare(
                    tracking_uri=self.tracking_uri,
                    resolved=resolved,
                    cache_dir=cache_dir,
                    runtime=s.runtime,
                    tolerance=s.onnx_tolerance,
                    torch_device=s.torch_device,
                )
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                if self._closing:
                    raise
                log.warning("%s; loading %s/%s in this process", exc, name, version)
                return self._load_in_process(resolved)
        assert entry is not None
        if entry.onnx is not None:
            try:
                return load_prepared(entry, name=name, version=version, onnx_threads=s.onnx_threads)
            except Exception as exc:  # noqa: BLE001 - an ONNX file that does not open: rebuild next attempt
                cache.discard(cache_dir, name, version)
                raise RuntimeError(f"cached ONNX model of {name}/{version} does not load: {exc}") from None
        # prepared as native (the reason is in the entry): load natively here, without re-checking
        model = self._load_in_process(resolved, runtime="native", reference=entry.check_rows)
        model.runtime_reason = entry.meta.get("runtime_reason", model.runtime_reason)
        return model

    def _load_in_process(
        self, resolved: ResolvedVersion, runtime: str | None = None, reference: Any = None
    ) -> LoadedModel:
        s = self.settings
        cache_dir = s.resolved_cache_dir()
        client = self._mlflow()
        if not hasattr(client, "get_model_version_download_uri"):  # the REST client only resolves
            client = mlflow_client(self.tracking_uri)
        folder = cache.download_model(client, resolved, cache_dir, self.tracking_uri)
        if reference is None:
            reference = cache.reference_sample(client, resolved, cache_dir)
        return load_local_model(
            folder,
            name=resolved.name,
            version=resolved.version,
            runtime=runtime or s.runtime,
            tolerance=s.onnx_tolerance,
            onnx_threads=s.onnx_threads,
            torch_device=s.torch_device,
            reference=reference,
        )

    def _batcher(self, model: LoadedModel) -> AdaptiveBatcher:
        name = model.name
        batch_requests = self.metrics.batch_requests.labels(name)
        batch_rows = self.metrics.batch_rows.labels(name)
        depth = self.metrics.queue_depth.labels(name)

        def on_batch(requests: int, rows: int) -> None:
            batch_requests.observe(requests)
            batch_rows.observe(rows)

        return AdaptiveBatcher(
            model.predict,
            inline=model.runtime.inline,
            max_batch_size=self.settings.max_batch_size,
            max_wait_s=self.settings.max_batch_wait_ms / 1000.0,
            on_batch=on_batch,
            on_queue=depth.set,
            name=name,
        )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
