"""The feature store's database URL rotated without a restart.

When the secrets backend reports a new ``FEATURES_DATABASE_URL`` (a rotated password in Vault),
:class:`DatabaseRotation` does this on the backend's refresh thread:

1. parses the URL (a malformed or removed one raises :class:`DatabaseConfigError`, naming the
   secret and never its value: the secrets interface logs one line, counts it in
   ``mlplatform_secrets_rejected_total{secret}``, and the current store stays in use);
2. connects once with it (``SELECT 1``): a URL PostgreSQL refuses is rejected the same way;
3. opens a new Feast store on it (SQL registry engine, offline store config, online store client);
4. swaps the data plane's store and provider: every request that starts from then on uses the new
   ones;
5. on a thread of its own, waits until the work already running on the old store has finished,
   then disposes of it (its registry engines' pooled connections, its Redis client).

Every use of the store runs either synchronously on the event loop (listings, SQLite reads) or as a
job of one of the data plane's two single-worker pools (Redis reads; pushes, writes and
materialisation). So "in flight on the old store" is exactly: the loop's current callback and the
jobs queued in either pool before the swap. A no-op scheduled on the loop and one submitted to each
pool after the swap complete only after those, which is the drain. Once the log line
``feature store database URL rotated: ... previous store drained and disposed`` appears, no
connection of the service uses the old password any more: the operator may end the role's older
sessions (``pg_terminate_backend``) and the old password is unused.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from mlplatform.features.database import DatabaseConfigError, DatabaseURL, check_database

if TYPE_CHECKING:
    from mlplatform.features.dataplane import FeatureDataPlane

log = logging.getLogger(__name__)

#: Longest wait for the old store's work to finish (a materialisation run can be long); after it
#: the old store is disposed anyway, and a job still running on it may fail.
DRAIN_TIMEOUT_S = 600.0


class DatabaseRotation:
    """``apply(url)``: the ``follow_secret`` consumer of the feature store's database URL secret."""

    def __init__(self, plane: FeatureDataPlane, *, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        self._plane = plane
        self._drain_timeout_s = drain_timeout_s
        self._lock = threading.Lock()
        #: rotations applied (new store in use) and previous stores disposed; for tests and logs
        self.applied = 0
        self.disposed = 0

    def apply(self, url: str | None) -> None:
        """Use the database at ``url`` for every new request; raises :class:`DatabaseConfigError`
        (one line, naming the secret, never the URL) and keeps the current store when it is missing,
        malformed or refused by PostgreSQL."""
        plane = self._plane
        name = plane.settings.database_url_secret
        if not url:
            raise DatabaseConfigError(
                f"{name}: removed from the secrets backend; keeping the current database"
            )
        database = DatabaseURL.parse(url, setting=name)
        with self._lock:  # one rotation at a time (the refresh thread calls serially; tests may not)
            if database == plane._database:  # noqa: SLF001 - same URL again: nothing to do
                return
            started = time.perf_counter()
            check_database(database, plane.settings.database_timeout_s)
            store, provider = plane.open_generation(database, apply=False)
            old = (plane.store, plane._provider)  # noqa: SLF001
            # the swap: requests starting from here read the new store and provider
            plane.store, plane._provider = store, provider  # noqa: SLF001
            plane._database = database  # noqa: SLF001
            plane.invalidate()
            self.applied += 1
            log.info(
                "feature store database URL rotated: registry and offline store now use %s (opened in %.2fs)",
                database.redacted(),
                time.perf_counter() - started,
            )
        threading.Thread(
            target=self._drain_and_dispose, args=old, name="features-db-drain", daemon=True
        ).start()

    def _barriers(self) -> list[Future[Any]]:
        plane = self._plane
        barriers: list[Future[Any]] = []
        for pool in (plane._read_pool, plane._write_pool):  # noqa: SLF001 - the plane's own workers
            try:
                barriers.append(pool.submit(lambda: None))
            except RuntimeError:  # the pool was shut down (service stopping): nothing left to run
                pass
        loop = plane.loop
        if loop is not None and loop.is_running():

            async def noop() -> None:
                return None

            barriers.append(asyncio.run_coroutine_threadsafe(noop(), loop))
        return barriers

    def _drain_and_dispose(self, store: Any, provider: Any) -> None:
        started = time.perf_counter()
        deadline = time.monotonic() + self._drain_timeout_s
        drained = True
        for barrier in self._barriers():
            try:
                barrier.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - a timeout (or a loop gone away): dispose anyway
                drained = False
        dispose_store(store, provider)
        self.disposed += 1
        log.info(
            "feature store database URL rotated: previous store drained and disposed after %.2fs%s",
            time.perf_counter() - started,
            "" if drained else f" (work on it still running after {self._drain_timeout_s:.0f}s)",
        )


def dispose_store(store: Any, provider: Any) -> None:
    """Close what a Feast store holds open: the SQL registry's engines (their pooled PostgreSQL
    connections) and the Redis online store's client. The offline store connects per call."""
    registry = getattr(store, "_registry", None) or getattr(store, "registry", None)
    engines = {
        id(e): e
        for e in (getattr(registry, "write_engine", None), getattr(registry, "read_engine", None))
        if e
    }
    for engine in engines.values():
        try:
            engine.dispose()
        except Exception:  # noqa: BLE001 - closing connections must not stop the rotation
            log.warning("closing the previous registry engine failed", exc_info=True)
    client = getattr(getattr(provider, "online_store", None), "_client", None)
    close = getattr(client, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001
            log.warning("closing the previous Redis client failed", exc_info=True)
