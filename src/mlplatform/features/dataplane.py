"""The feature-store data plane: online reads, pushes, materialisation and listings over Feast.

Online reads take Feast's provider path (``provider.online_read`` per feature view, one query for
every entity of the request) with the feature-service resolution cached, instead of
``FeatureStore.get_online_features`` whose per-call Python overhead dominates at one entity. The
values are Feast's own: the same online store rows, decoded from Feast's ``ValueProto``; the
on-demand view runs its registered transformation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from mlplatform.core.errors import InvalidInput, NotFound, Unavailable
from mlplatform.core.secrets import follow_secret
from mlplatform.features.database import DatabaseConfigError, DatabaseURL, check_database
from mlplatform.features.metrics import REFS_LABEL, FeatureMetrics
from mlplatform.features.settings import FeatureSettings
from mlplatform.features.store import (
    FeatureRepoPaths,
    OnlineStoreSpec,
    apply_definitions,
    count_online_writes,
    install_fail_fast_redis_client,
    odfv_inputs,
    online_provider,
    open_store,
)

log = logging.getLogger(__name__)

_INT_KINDS = ("int64_val", "int32_val")


def _decode(value: Any) -> Any:
    """A Feast ``ValueProto`` as a plain Python value (None when unset)."""
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    out = getattr(value, kind)
    if kind in ("double_val", "float_val") and (math.isnan(out) or math.isinf(out)):
        return None
    if kind.endswith("_list_val"):
        return list(out.val)
    return out


def _utc(end: datetime | None) -> datetime:
    """``end`` as an aware UTC datetime (naive = UTC), now when None."""
    end = end or datetime.now(UTC)
    return end if end.tzinfo is not None else end.replace(tzinfo=UTC)


def _rfc3339(ts: datetime) -> str:
    """An event time as Feast's feature server writes it (RFC 3339, UTC, ``Z``; fractional seconds
    only when there are any, as milliseconds or microseconds)."""
    ts = ts.astimezone(UTC) if ts.tzinfo is not None else ts
    base = ts.strftime("%Y-%m-%dT%H:%M:%S")
    micros = ts.microsecond
    if micros == 0:
        return base + "Z"
    if micros % 1000 == 0:
        return f"{base}.{micros // 1000:03d}Z"
    return f"{base}.{micros:06d}Z"


def _entity_value(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        raise InvalidInput(f"{where}: must be an integer entity key, got {type(raw).__name__}")
    if not -(2**63) <= raw < 2**63:
        raise InvalidInput(f"{where}: out of int64 range")
    return raw


@dataclass
class _ViewRead:
    """One feature view to read: its Feast object, join key and requested feature names."""

    view: Any
    join_key: str
    features: list[str]


@dataclass
class _Plan:
    """A resolved feature service or reference list (cached)."""

    label: str
    feature_names: list[str]
    reads: list[_ViewRead]
    #: the feature view (or on-demand view) of each name in ``feature_names``, same order
    feature_views: list[str] = field(default_factory=list)
    odfvs: list[tuple[Any, list[str], list[str]]] = field(default_factory=list)
    request_fields: list[str] = field(default_factory=list)
    join_keys: list[str] = field(default_factory=list)


class FeatureDataPlane:
    """Transport-free feature-store service (routes and tests drive it)."""

    def __init__(self, settings: FeatureSettings, metrics: FeatureMetrics, secrets: Any = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.secrets = secrets
        self.paths = FeatureRepoPaths(settings.data_dir)
        self.store: Any = None
        self._provider: Any = None
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._plans_lock = threading.Lock()
        self._entity_keys: frozenset[str] | None = None
        self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-read")
        self._write_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-write")
        self._schedule: asyncio.Task[None] | None = None
        self._materialize_lock = asyncio.Lock()
        self._written: dict[str, int] = {}
        self._ready = False
        self._database: DatabaseURL | None = None
        self._database_checked = False
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def _spec(self) -> OnlineStoreSpec:
        password = None
        if self.settings.online_store == "redis" and self.secrets is not None:
            password = self.secrets.get(self.settings.redis_password_secret)
        return OnlineStoreSpec(
            kind=self.settings.online_store,
            redis_address=self.settings.redis_address,
            redis_password=password,
            redis_db=self.settings.redis_db,
            redis_ssl=self.settings.redis_ssl,
        )

    def database(self) -> DatabaseURL | None:
        """The database of the registry and offline store, parsed from its secret; None = embedded.

        Raises :class:`DatabaseConfigError` (one line naming the secret, never its value) when the
        URL is malformed, or unset while ``database_required``."""
        if self._database_checked:
            return self._database
        name = self.settings.database_url_secret
        url = self.secrets.get(name) if self.secrets is not None and name else None
        if url is None:
            if self.settings.database_required:
                raise DatabaseConfigError(
                    f"{name or 'FEATURES_DATABASE_URL_SECRET'}: not set, and FEATURES_DATABASE_REQUIRED is "
                    "true: set the PostgreSQL URL of the shared registry and offline store"
                )
            return None
        return DatabaseURL.parse(url, setting=name)

    def check_database(self) -> None:
        """Start-up check (blocking): the database URL parses and PostgreSQL answers ``SELECT 1``.
        Raises :class:`DatabaseConfigError` with one clear line; nothing to check when embedded."""
        database = self.database()
        if database is not None:
            check_database(database, self.settings.database_timeout_s)
        self._database, self._database_checked = database, True

    def load(self) -> None:
        """Open the Feast repository (blocking): render the config, apply definitions, warm the store."""
        database = self.database()
        self.store, self._provider = self.open_generation(database, apply=self.settings.apply_on_start)
        if self.settings.online_store == "redis" and self.secrets is not None:
            # a rotated Redis password: new connections authenticate with it, no restart
            follow_secret(
                self.secrets,
                self.settings.redis_password_secret,
                lambda _value: self._install_fail_fast_redis_client(self._provider.online_store),
            )
        if database is not None and self.secrets is not None:
            # a rotated database URL: new store, swapped for new requests, the old one drained
            from mlplatform.features.rotation import DatabaseRotation

            follow_secret(self.secrets, self.settings.database_url_secret, DatabaseRotation(self).apply)
        self._ready = True

    def open_generation(self, database: DatabaseURL | None, *, apply: bool) -> tuple[Any, Any]:
        """A Feast store and its provider on ``database`` (blocking), with the fail-fast Redis client
        and the materialisation row count installed: start-up, and each database URL rotation."""
        store = open_store(
            self.paths,
            self._spec(),
            environment=self.settings.environment,
            registry_cache_ttl_seconds=self.settings.registry_cache_ttl_seconds,
            database=database,
        )
        log.info(
            "feature repository opened: registry %s, offline store %s, online store %s",
            f"sql ({database.redacted()})" if database else f"file ({self.paths.registry})",
            "postgres" if database else "file (parquet)",
            self.settings.online_store,
        )
        if apply:
            apply_definitions(store, self.paths)
        provider = online_provider(store)
        if self.settings.online_store == "redis":
            self._install_fail_fast_redis_client(provider.online_store)
        count_online_writes(provider.online_store, self._count_written)  # rows written by materialisation
        return store, provider

    def _install_fail_fast_redis_client(self, online_store: Any) -> None:
        install_fail_fast_redis_client(online_store, self._spec(), self.settings.redis_timeout_s)

    def _count_written(self, view: str, rows: int) -> None:
        self._written[view] = self._written.get(view, 0) + rows

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()  # a database URL rotation drains the loop's work
        await asyncio.get_running_loop().run_in_executor(self._write_pool, self.load)
        if self.settings.materialize_interval_s > 0:
            self._schedule = asyncio.create_task(self._materialize_forever())

    async def stop(self) -> None:
        self._ready = False
        if self._schedule is not None:
            self._schedule.cancel()
            try:
                await self._schedule
            except asyncio.CancelledError:
                pass
        self._read_pool.shutdown(wait=True)
        self._write_pool.shutdown(wait=True)

    def ready(self) -> bool:
        return self._ready

    def _require_store(self) -> Any:
        if self.store is None:
            raise Unavailable("feature store is starting: the Feast repository is not loaded yet")
        return self.store

    # -- resolution ----------------------------------------------------------------------------
    def _odfv_names(self) -> set[str]:
        return {v.name for v in self.store.list_on_demand_feature_views()}

    def _build_plan(self, feature_service: str | None, refs: list[str] | None) -> _Plan:
        from feast.errors import FeatureServiceNotFoundException, FeatureViewNotFoundException

        store = self._require_store()
        wanted: list[tuple[str, list[str]]] = []  # (view name, features)
        if feature_service is not None:
            try:
                service = store.get_feature_service(feature_service)
            except FeatureServiceNotFoundException as exc:
                raise NotFound(f"feature_service: unknown feature service {feature_service!r}") from exc
            for projection in service.feature_view_projections:
                wanted.append((projection.name_to_use(), [f.name for f in projection.features]))
            label = feature_service
        else:
            grouped: dict[str, list[str]] = {}
            for i, ref in enumerate(refs or []):
                view, sep, name = ref.partition(":")
                if not sep or not view or not name:
                    raise InvalidInput(f"features[{i}]: {ref!r} is not a 'feature_view:feature' reference")
                grouped.setdefault(view, []).append(name)
            wanted = list(grouped.items())
            label = REFS_LABEL
        odfv_names = self._odfv_names()
        plan = _Plan(label=label, feature_names=[], reads=[])
        reads: dict[str, _ViewRead] = {}
        for view_name, names in wanted:
            if view_name in odfv_names:
                odfv = store.get_on_demand_feature_view(view_name)
                known = {f.name for f in odfv.features}
                for name in names:
                    if name not in known:
                        raise NotFound(f"features: feature view {view_name!r} has no feature {name!r}")
                plan.odfvs.append((odfv, names, odfv_inputs(odfv)))
                for source in odfv.source_request_sources.values():
                    plan.request_fields += [
                        f.name for f in source.schema if f.name not in plan.request_fields
                    ]
                for projection in odfv.source_feature_view_projections.values():
                    src = store.get_feature_view(projection.name)
                    self._add_read(reads, src, [f.name for f in projection.features], hidden=True)
                plan.feature_names += names
                plan.feature_views += [view_name] * len(names)
                continue
            try:
                view = store.get_feature_view(view_name)
            except FeatureViewNotFoundException as exc:
                raise NotFound(f"features: unknown feature view {view_name!r}") from exc
            known = {f.name for f in view.features}
            for name in names:
                if name not in known:
                    raise NotFound(f"features: feature view {view_name!r} has no feature {name!r}")
            self._add_read(reads, view, names, hidden=False)
            plan.feature_names += names
            plan.feature_views += [view_name] * len(names)
        plan.reads = list(reads.values())
        plan.join_keys = sorted({r.join_key for r in plan.reads})
        return plan

    @staticmethod
    def _add_read(reads: dict[str, _ViewRead], view: Any, names: list[str], *, hidden: bool) -> None:
        read = reads.get(view.name)
        if read is None:
            join_key = view.entity_columns[0].name
            read = reads[view.name] = _ViewRead(view=view, join_key=join_key, features=[])
        for name in names:
            if name not in read.features:
                read.features.append(name)

    def resolve(self, feature_service: str | None, refs: list[str] | None) -> _Plan:
        """The cached read plan for a feature service or a list of references (404 if unknown)."""
        if (feature_service is None) == (not refs):
            raise InvalidInput(
                "feature_service/features: give exactly one of a feature service or feature references"
            )
        key = (feature_service,) if feature_service is not None else ("", *refs)  # type: ignore[misc]
        plan = self._plans.get(key)
        if plan is None:
            plan = self._build_plan(feature_service, refs)
            with self._plans_lock:
                self._plans[key] = plan
        return plan

    def invalidate(self) -> None:
        """Forget cached plans (after definitions change)."""
        with self._plans_lock:
            self._plans.clear()
            self._entity_keys = None

    # -- online reads -----------------------------------------------------------------------------
    def _validate_rows(self, plan: _Plan, rows: list[dict[str, Any]]) -> dict[str, list[int]]:
        if not rows:
            raise InvalidInput("rows: must hold at least one entity row")
        if len(rows) > self.settings.max_rows:
            raise InvalidInput(f"rows: at most {self.settings.max_rows} rows per request, got {len(rows)}")
        keys: dict[str, list[int]] = {k: [] for k in plan.join_keys}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InvalidInput(f"rows[{i}]: must be an object of entity keys and request fields")
            for key in plan.join_keys:
                if key not in row or row[key] is None:
                    raise InvalidInput(f"rows[{i}].{key}: missing entity key")
                keys[key].append(_entity_value(row[key], f"rows[{i}].{key}"))
            for name in plan.request_fields:
                value = row.get(name)
                if value is None:
                    raise InvalidInput(f"rows[{i}].{name}: missing request-time field")
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidInput(f"rows[{i}].{name}: must be a number")
                if isinstance(value, float) and not math.isfinite(value):
                    raise InvalidInput(f"rows[{i}].{name}: must be a finite number")
        return keys

    def _read_views(
        self, plan: _Plan, keys: dict[str, list[int]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, datetime | None]]]:
        """Read every feature view of ``plan`` for validated entity ``keys`` (one online-store query a
        view). Returns the decoded values per row, the missing entities, and per row the event time of
        each view's stored row (None where the entity has no row)."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        store_kind = self.settings.online_store
        config = self.store.config
        n = len(next(iter(keys.values()))) if keys else 0
        values: list[dict[str, Any]] = [{} for _ in range(n)]
        stamps: list[dict[str, datetime | None]] = [{} for _ in range(n)]
        missing: list[dict[str, Any]] = []
        now = time.time()
        for read in plan.reads:
            entity_keys = [
                EntityKey(join_keys=[read.join_key], entity_values=[Value(int64_val=v)])
                for v in keys[read.join_key]
            ]
            t0 = time.perf_counter()
            try:
                result = self._provider.online_read(config, read.view, entity_keys, read.features)
            except Exception as exc:
                log.exception("online store read failed for feature view %s", read.view.name)
                raise Unavailable(f"online store ({store_kind}) is unavailable") from exc
            self.metrics.store_read_latency.labels(store_kind, read.view.name).observe(
                time.perf_counter() - t0
            )
            newest: datetime | None = None
            n_missing = 0
            for i, (ts, data) in enumerate(result):
                out = values[i]
                if data is None:
                    missing.append(
                        {
                            "row": i,
                            "feature_view": read.view.name,
                            "join_key": read.join_key,
                            "value": keys[read.join_key][i],
                        }
                    )
                    for name in read.features:
                        out[name] = None
                    stamps[i][read.view.name] = None
                    continue
                decoded = {
                    name: None if data.get(name) is None else _decode(data[name]) for name in read.features
                }
                if all(v is None for v in decoded.values()):
                    # a key without any stored value (e.g. read while Redis reloads after a restart) is
                    # missing too: the caller must see that, not silent nulls
                    missing.append(
                        {
                            "row": i,
                            "feature_view": read.view.name,
                            "join_key": read.join_key,
                            "value": keys[read.join_key][i],
                        }
                    )
                    n_missing += 1
                    stamps[i][read.view.name] = None
                else:
                    stamps[i][read.view.name] = ts
                out.update(decoded)
                if ts is not None and (newest is None or ts > newest):
                    newest = ts
            if newest is not None:
                ts_s = newest.timestamp() if newest.tzinfo else newest.replace(tzinfo=UTC).timestamp()
                self.metrics.freshness.labels(read.view.name).set(max(0.0, now - ts_s))
            n_missing += sum(1 for _, d in result if d is None)
            if n_missing:
                self.metrics.missing_entities.labels(read.view.name).inc(n_missing)
        return values, missing, stamps

    @staticmethod
    def _apply_odfvs(plan: _Plan, values: list[dict[str, Any]], request: dict[str, list[Any]]) -> None:
        """Run each on-demand view of ``plan`` on the rows' values and request-time columns."""
        for odfv, names, inputs in plan.odfvs:
            columns = {
                name: [float(v) for v in request[name]]
                if name in plan.request_fields
                else [v.get(name) for v in values]
                for name in inputs
            }
            computed = odfv.feature_transformation.transform(columns)
            for name in names:
                for i, v in enumerate(computed[name]):
                    values[i][name] = (
                        None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
                    )

    def read_online(self, plan: _Plan, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Blocking online read for validated ``rows`` (runs on the read thread)."""
        started = time.perf_counter()
        keys = self._validate_rows(plan, rows)
        values, missing, _ = self._read_views(plan, keys)
        if plan.odfvs:
            self._apply_odfvs(plan, values, {name: [r[name] for r in rows] for name in plan.request_fields})
        out_rows = [{name: row.get(name) for name in plan.feature_names} for row in values]
        self.metrics.request_latency.labels(plan.label).observe(time.perf_counter() - started)
        return {
            "feature_service": plan.label if plan.label != REFS_LABEL else None,
            "features": plan.feature_names,
            "rows": out_rows,
            "missing": missing,
        }

    # -- Feast feature-server reads (POST /get-online-features) ---------------------------------------
    def entity_join_keys(self) -> frozenset[str]:
        """Join keys of every entity of the repository (cached until :meth:`invalidate`)."""
        keys = self._entity_keys
        if keys is None:
            store = self._require_store()
            keys = self._entity_keys = frozenset(e.join_key for e in store.list_entities())
        return keys

    def _validate_columns(self, plan: _Plan, entities: dict[str, list[Any]]) -> dict[str, list[int]]:
        """Feast's columnar ``entities``: equal-length lists, integer join keys, numeric request fields."""
        lengths = {name: len(column) for name, column in entities.items()}
        n = next(iter(lengths.values()), 0)
        for name, length in lengths.items():
            if length != n:
                raise InvalidInput(
                    f"entities.{name}: every entity column must have the same length "
                    f"({next(iter(lengths))} has {n}, {name} has {length})"
                )
        if n == 0:
            raise InvalidInput("entities: must hold at least one entity row")
        if n > self.settings.max_rows:
            raise InvalidInput(f"entities: at most {self.settings.max_rows} rows per request, got {n}")
        join_keys = self.entity_join_keys()
        keys: dict[str, list[int]] = {}
        for name, column in entities.items():
            if name in join_keys:
                keys[name] = []
                for i, raw in enumerate(column):
                    if raw is None:
                        raise InvalidInput(f"entities.{name}[{i}]: missing entity key")
                    keys[name].append(_entity_value(raw, f"entities.{name}[{i}]"))
        for key in plan.join_keys:
            if key not in keys:
                raise InvalidInput(f"entities.{key}: missing entity key (needed by the requested features)")
        for name in plan.request_fields:
            column = entities.get(name)
            if column is None:
                raise InvalidInput(
                    f"entities.{name}: missing request-time field (needed by an on-demand view)"
                )
            for i, value in enumerate(column):
                if value is None or isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidInput(f"entities.{name}[{i}]: must be a number")
                if isinstance(value, float) and not math.isfinite(value):
                    raise InvalidInput(f"entities.{name}[{i}]: must be a finite number")
        return keys

    def read_online_feast(
        self,
        plan: _Plan,
        entities: dict[str, list[Any]],
        full_feature_names: bool = False,
        view_metadata: bool = False,
    ) -> dict[str, Any]:
        """Blocking online read answered in the shape of Feast's feature server (``feast serve``):
        ``metadata.feature_names`` (the entity join keys of the request first, then the features,
        ``view__feature`` with ``full_feature_names``) and one ``results`` entry per name with
        ``values``, ``statuses`` and ``event_timestamps``, as ``convert_response_to_dict`` renders
        Feast's ``GetOnlineFeaturesResponse``: join keys PRESENT at epoch 0, a feature PRESENT with
        its row's event time, NOT_FOUND (null, epoch 0) for an entity without a stored row,
        NULL_VALUE for a stored null; on-demand features PRESENT at epoch 0. ``view_metadata`` adds
        ``metadata.feature_view_metadata`` (each view read, by name; no versions)."""
        started = time.perf_counter()
        keys = self._validate_columns(plan, entities)
        out_names = [
            f"{view}__{name}" if full_feature_names else name
            for view, name in zip(plan.feature_views, plan.feature_names, strict=True)
        ]
        seen: set[str] = set()
        for name in out_names:
            if name in seen:
                raise InvalidInput(
                    f"features: duplicate feature name {name!r}; ask for it once, or set "
                    "full_feature_names to tell features of different views apart"
                )
            seen.add(name)
        values, _, stamps = self._read_views(plan, keys)
        if plan.odfvs:
            self._apply_odfvs(plan, values, {name: entities[name] for name in plan.request_fields})
        n = len(values)
        epoch = "1970-01-01T00:00:00Z"
        names: list[str] = []
        results: list[dict[str, Any]] = []
        for key, column in keys.items():
            names.append(key)
            results.append({"values": column, "statuses": ["PRESENT"] * n, "event_timestamps": [epoch] * n})
        odfv_names = {odfv.name for odfv, _, _ in plan.odfvs}
        # one event time per row and view (shared by the view's features), rendered once
        rendered = [{v: None if t is None else _rfc3339(t) for v, t in row.items()} for row in stamps]
        for out_name, view, name in zip(out_names, plan.feature_views, plan.feature_names, strict=True):
            column_values: list[Any] = []
            statuses: list[str] = []
            times: list[str] = []
            for i in range(n):
                value = values[i].get(name)
                column_values.append(value)
                if view in odfv_names:
                    statuses.append("PRESENT" if value is not None else "NULL_VALUE")
                    times.append(epoch)
                    continue
                ts = rendered[i].get(view)
                if ts is None:
                    statuses.append("NOT_FOUND")
                    times.append(epoch)
                else:
                    statuses.append("PRESENT" if value is not None else "NULL_VALUE")
                    times.append(ts)
            names.append(out_name)
            results.append({"values": column_values, "statuses": statuses, "event_timestamps": times})
        metadata: dict[str, Any] = {"feature_names": names}
        if view_metadata:
            metadata["feature_view_metadata"] = [{"name": v} for v in dict.fromkeys(plan.feature_views)]
        self.metrics.request_latency.labels(plan.label).observe(time.perf_counter() - started)
        return {"metadata": metadata, "results": results}

    async def get_online_features_feast(
        self,
        entities: dict[str, list[Any]],
        feature_service: str | None = None,
        features: list[str] | None = None,
        full_feature_names: bool = False,
        *,
        view_metadata: bool = False,
    ) -> dict[str, Any]:
        """:meth:`read_online_feast` for a feature service (it wins when both are given, as in
        ``feast serve``) or a list of ``view:feature`` references."""
        self._require_store()
        if feature_service:
            plan = self.resolve(feature_service, None)
        elif features:
            plan = self.resolve(None, features)
        else:
            raise InvalidInput("features: give feature references 'view:feature' or a feature_service")
        if self.settings.online_store == "sqlite":
            return self.read_online_feast(plan, entities, full_feature_names, view_metadata)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._read_pool, self.read_online_feast, plan, entities, full_feature_names, view_metadata
        )

    async def get_online_features(
        self,
        rows: list[dict[str, Any]],
        feature_service: str | None = None,
        features: list[str] | None = None,
    ) -> dict[str, Any]:
        """Feature values for each row (null where the entity has none) plus the missing entities."""
        self._require_store()
        plan = self.resolve(feature_service, features)
        if self.settings.online_store == "sqlite":
            # a local file read (~0.1 ms a feature view): cheaper on the event loop than a thread hop
            return self.read_online(plan, rows)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self.read_online, plan, rows)

    # -- push -----------------------------------------------------------------------------------
    def _push(
        self, push_source: str, rows: list[dict[str, Any]], to: str, field: str = "rows"
    ) -> dict[str, Any]:
        """Validate and write ``rows``; errors name ``<field>[i].<column>`` (``rows``), or
        ``df.<column>[i]`` when ``field`` is ``df`` (Feast's columnar push body)."""
        from feast.data_source import PushMode

        def where(i: int | None, name: str | None = None) -> str:
            if field == "df":
                return "df" if name is None else f"df.{name}" + ("" if i is None else f"[{i}]")
            return f"rows[{'' if i is None else i}]" + ("" if name is None else f".{name}")

        store = self._require_store()
        views = [
            v
            for v in store.list_feature_views()
            if getattr(v, "stream_source", None) is not None and v.stream_source.name == push_source
        ]
        if not views:
            raise NotFound(f"push_source: unknown push source {push_source!r}")
        if not rows:
            raise InvalidInput(f"{field}: must hold at least one row")
        if len(rows) > self.settings.max_push_rows:
            raise InvalidInput(
                f"{field}: at most {self.settings.max_push_rows} rows per push, got {len(rows)}"
            )
        timestamp_field = views[0].batch_source.timestamp_field
        needed: dict[str, str] = {}
        for view in views:
            for col in view.entity_columns:
                needed[col.name] = "int"
            for f in view.features:
                needed[f.name] = "int" if "Int" in str(f.dtype) else "float"
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InvalidInput(f"{where(i)}: must be an object")
            if timestamp_field not in row:
                raise InvalidInput(f"{where(None if field == 'df' else i, timestamp_field)}: missing")
            for name, kind in needed.items():
                if name not in row:
                    raise InvalidInput(f"{where(None if field == 'df' else i, name)}: missing")
                v = row[name]
                if kind == "int":
                    _entity_value(v, where(i, name))
                elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                    raise InvalidInput(f"{where(i, name)}: must be a finite number")
        frame = pd.DataFrame(rows)
        try:
            frame[timestamp_field] = pd.to_datetime(frame[timestamp_field], utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{where(None, timestamp_field)}: not an ISO 8601 timestamp") from exc
        for name, kind in needed.items():
            frame[name] = frame[name].astype("int64" if kind == "int" else "float64")
        mode = {"online": PushMode.ONLINE, "offline": PushMode.OFFLINE}.get(to, PushMode.ONLINE_AND_OFFLINE)
        try:
            store.push(push_source, frame, to=mode)
        except Exception as exc:
            log.exception("push to %s failed", push_source)
            raise Unavailable(
                f"push_source {push_source!r}: the feature store could not write the rows"
            ) from exc
        self.metrics.pushed_rows.labels(push_source).inc(len(frame))
        return {"push_source": push_source, "rows": len(frame), "feature_views": [v.name for v in views]}

    async def push(
        self, push_source: str, rows: list[dict[str, Any]], to: str = "online", field: str = "rows"
    ) -> dict[str, Any]:
        """Write fresh values through a push source (online store, offline store or both).
        ``field``: how errors name the rows (``rows``, or ``df`` for Feast's columnar body)."""
        self._require_store()
        return await asyncio.get_running_loop().run_in_executor(
            self._write_pool, self._push, push_source, rows, to, field
        )

    def _write_online(self, view_name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from feast.errors import FeatureViewNotFoundException

        store = self._require_store()
        try:
            view = store.get_feature_view(view_name)
        except FeatureViewNotFoundException as exc:
            raise NotFound(f"feature_view_name: unknown feature view {view_name!r}") from exc
        if not rows:
            raise InvalidInput("df: must hold at least one row")
        if len(rows) > self.settings.max_push_rows:
            raise InvalidInput(f"df: at most {self.settings.max_push_rows} rows per write, got {len(rows)}")
        timestamp_field = view.batch_source.timestamp_field
        keys = [c.name for c in view.entity_columns]
        kinds = {f.name: "int" if "Int" in str(f.dtype) else "float" for f in view.features}
        for name in [*keys, timestamp_field]:
            if name not in rows[0]:
                raise InvalidInput(f"df.{name}: missing")
        for i, row in enumerate(rows):
            for key in keys:
                _entity_value(row[key], f"df.{key}[{i}]")
            for name, kind in kinds.items():
                v = row.get(name)
                if v is None:
                    continue
                if kind == "int":
                    _entity_value(v, f"df.{name}[{i}]")
                elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                    raise InvalidInput(f"df.{name}[{i}]: must be a finite number")
        frame = pd.DataFrame(rows)
        for name in (timestamp_field, "created"):
            if name in frame:
                try:
                    frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
                except (ValueError, TypeError) as exc:
                    raise InvalidInput(f"df.{name}: not an ISO 8601 timestamp") from exc
        try:
            store.write_to_online_store(view_name, frame)
        except Exception as exc:
            log.exception("write to the online store failed for %s", view_name)
            raise Unavailable(
                f"feature_view_name {view_name!r}: the online store could not write the rows"
            ) from exc
        return {"feature_view": view_name, "rows": len(frame)}

    async def write_to_online_store(self, view_name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Write rows of one feature view straight to the online store (Feast's
        ``/write-to-online-store``: what the SDK's remote online store sends)."""
        self._require_store()
        return await asyncio.get_running_loop().run_in_executor(
            self._write_pool, self._write_online, view_name, rows
        )

    # -- materialisation -------------------------------------------------------------------------
    def _materialize(
        self, end: datetime, feature_views: list[str] | None, start: datetime | None = None
    ) -> dict[str, Any]:
        store = self._require_store()
        known = [v.name for v in store.list_feature_views()]
        for name in feature_views or []:
            if name not in known:
                raise NotFound(f"feature_views: unknown feature view {name!r}")
        names = feature_views or known
        before = dict(self._written)
        started = time.perf_counter()
        try:
            if start is None:
                store.materialize_incremental(end_date=end, feature_views=names)
            else:
                store.materialize(start_date=start, end_date=end, feature_views=names)
        except Exception as exc:
            self.metrics.materialization_runs.labels("error").inc()
            log.exception("materialisation failed")
            raise Unavailable("materialisation failed: the offline or online store is unavailable") from exc
        duration = time.perf_counter() - started
        written = {n: self._written.get(n, 0) - before.get(n, 0) for n in names}
        self.metrics.materialization_runs.labels("success").inc()
        self.metrics.materialization_duration.observe(duration)
        for name, n in written.items():
            if n:
                self.metrics.materialized_rows.labels(name).inc(n)
        out = {"end": end, "feature_views": names, "rows_written": written, "duration_s": duration}
        return out if start is None else {"start": start, **out}

    def materialize_blocking(
        self,
        end: datetime | None = None,
        feature_views: list[str] | None = None,
        start: datetime | None = None,
    ) -> dict[str, Any]:
        """Materialisation up to ``end`` (default now) in the calling thread: what ``mlplatform
        materialize`` (the materialisation CronJob) runs after :meth:`load`. Incremental (from each
        view's last materialised end) unless ``start`` is given: then the whole ``[start, end]`` range
        (a backfill)."""
        return self._materialize(_utc(end), feature_views, None if start is None else _utc(start))

    async def materialize(
        self,
        end: datetime | None = None,
        feature_views: list[str] | None = None,
        start: datetime | None = None,
    ) -> dict[str, Any]:
        """Incremental materialisation up to ``end`` (default now), or the whole ``[start, end]``
        range when ``start`` is given; one run at a time."""
        self._require_store()
        end = _utc(end)
        start = None if start is None else _utc(start)
        async with self._materialize_lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._write_pool, self._materialize, end, feature_views, start)

    async def _materialize_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.materialize_interval_s)
            try:
                result = await self.materialize()
                log.info("scheduled materialisation wrote %s", result["rows_written"])
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the schedule alive; the run is counted as an error
                log.exception("scheduled materialisation failed")

    # -- listings --------------------------------------------------------------------------------
    def list_feature_views(self) -> dict[str, Any]:
        store = self._require_store()
        out = []
        for view in store.list_feature_views():
            intervals = getattr(view, "materialization_intervals", None) or []
            out.append(
                {
                    "name": view.name,
                    "kind": "batch",
                    "entities": [c.name for c in view.entity_columns],
                    "features": [{"name": f.name, "dtype": str(f.dtype)} for f in view.features],
                    "ttl_seconds": view.ttl.total_seconds() if view.ttl else None,
                    "materialized_until": max(i[1] for i in intervals) if intervals else None,
                }
            )
        for odfv in store.list_on_demand_feature_views():
            out.append(
                {
                    "name": odfv.name,
                    "kind": "on_demand",
                    "entities": [],
                    "features": [{"name": f.name, "dtype": str(f.dtype)} for f in odfv.features],
                    "request_fields": [
                        f.name for s in odfv.source_request_sources.values() for f in s.schema
                    ],
                }
            )
        return {"feature_views": out}

    def list_feature_services(self) -> dict[str, Any]:
        store = self._require_store()
        services = []
        for svc in store.list_feature_services():
            refs = [f"{p.name_to_use()}:{f.name}" for p in svc.feature_view_projections for f in p.features]
            services.append({"name": svc.name, "features": refs, "tags": dict(svc.tags or {})})
        services.sort(key=lambda s: (s["name"] != self.settings.default_feature_service, s["name"]))
        return {"feature_services": services}
