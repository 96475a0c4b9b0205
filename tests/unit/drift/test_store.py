"""The drift store contract, run on both backends (SQLite file, real PostgreSQL), plus what only a shared
database must guarantee: two replicas, one set of windows, one retraining episode."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from mlplatform.drift.store import (
    SqliteDriftStore,
    StoredRecord,
    WindowAlreadyClosed,
    open_store,
)
from tests.unit.drift.tiny_registry import MODEL, drift_settings, make_frame, records, running_app


def _rec(pid: str, row: int = 0, model: str = "m", version: str = "1", request_id: str = "") -> StoredRecord:
    return StoredRecord(pid, row, model, version, 1.0 + row, {"a": float(row), "b": "x"}, 0.5, request_id)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "postgres":
        dsn = request.getfixturevalue("postgres").create_database()
        s = open_store(dsn, tmp_path)
    else:
        s = open_store(None, tmp_path)
    yield s
    s.close()


def test_records_are_keyed_by_prediction_id_not_the_clients_id(store):
    first = [_rec("p1", 0, request_id="client-1"), _rec("p1", 1, request_id="client-1")]
    assert store.insert_records(first) == {("m", "1"): 2}
    # the same request re-sent: nothing new
    assert store.insert_records(first) == {}
    # another request reusing the client's id is a different prediction: kept
    assert store.insert_records([_rec("p2", 0, request_id="client-1")]) == {("m", "1"): 1}
    # the same prediction id under another version or model is another record
    new = store.insert_records([_rec("p1", 0, version="2"), _rec("p1", 0, model="n")])
    assert new == {("m", "2"): 1, ("n", "1"): 1}
    assert sorted(store.record_keys()) == [
        ("m", "1", "p1", 0),
        ("m", "1", "p1", 1),
        ("m", "1", "p2", 0),
        ("m", "2", "p1", 0),
        ("n", "1", "p1", 0),
    ]
    assert store.count_records() == 5 and store.count_records("m") == 4
    assert store.known_models() == ["m", "n"]
    got = [r for _, r in store.oldest_open("m", "1", None)]
    assert [(r.prediction_id, r.row_index, r.request_id) for r in got] == [
        ("p1", 0, "client-1"),
        ("p1", 1, "client-1"),
        ("p2", 0, "client-1"),
    ]
    assert got[1].inputs == {"a": 1.0, "b": "x"} and got[1].prediction == 0.5


def test_close_window_is_atomic_and_never_closes_a_record_twice(store):
    store.insert_records([_rec(f"p{i}") for i in range(10)])
    assert store.open_count("m", "1") == 10
    rows = store.oldest_open("m", "1", 6)
    assert [r.prediction_id for _, r in rows] == [f"p{i}" for i in range(6)]
    wid = store.close_window("m", "1", [i for i, _ in rows], 1.0, 0.25, False, {"drift_share": 0.25})
    assert store.open_count("m", "1") == 4
    assert [r.prediction_id for r in store.window_records(wid)] == [f"p{i}" for i in range(6)]
    # a second replica evaluating the same (stale) rows writes nothing
    stale = rows[:2] + store.oldest_open("m", "1", 2)
    with pytest.raises(WindowAlreadyClosed):
        store.close_window("m", "1", [i for i, _ in stale], 1.0, 0.5, True, {"drift_share": 0.5})
    assert store.open_count("m", "1") == 4
    assert [w.id for w in store.windows("m")] == [wid]
    (latest,) = store.latest_windows()
    assert latest.id == wid and latest.result == {"drift_share": 0.25} and latest.dataset_drift is False
    assert store.open_versions()[0][:3] == ("m", "1", 4)


def test_retraining_state_and_events(store):
    state = store.retrain_state("m")
    assert (state.consecutive, state.episode_active, state.last_trigger) == (0, False, None)
    state.consecutive, state.episode_active, state.last_trigger = 3, True, 123.5
    store.save_retrain_state(state)
    again = store.retrain_state("m")
    assert (again.consecutive, again.episode_active, again.last_trigger) == (3, True, 123.5)
    store.add_retrain_event("m", "1", "drift", "kubernetes", "started", "job x")
    (event,) = store.retrain_events("m")
    assert event["reason"] == "drift" and event["detail"] == "job x" and store.retrain_events("n") == []


async def test_exclusive_serialises_holders_of_the_same_model(store):
    order: list[str] = []

    async def hold(tag: str) -> None:
        async with store.exclusive("m"):
            order.append(f"{tag}+")
            await asyncio.sleep(0.05)
            order.append(f"{tag}-")

    await asyncio.gather(hold("a"), hold("b"))
    assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])


async def test_advisory_lock_is_shared_by_two_replicas_and_dies_with_its_holder(postgres, tmp_path):
    """Two store objects (two pods) on one database: one holder at a time; a dead holder frees it."""
    dsn = postgres.create_database()
    one, two = open_store(dsn, tmp_path / "a"), open_store(dsn, tmp_path / "b")
    try:
        async with one.exclusive("m"):
            waiter = asyncio.create_task(_enter(two, "m"))
            await asyncio.sleep(0.3)
            assert not waiter.done()  # the other replica waits
            async with two.exclusive("other-model"):
                pass  # another model is not blocked
        await asyncio.wait_for(waiter, 5)
        # a holder whose connection dies (a killed pod) releases the lock
        import psycopg

        conn = psycopg.connect(dsn, autocommit=True)
        from mlplatform.drift.store_pg import advisory_key

        conn.execute("SELECT pg_advisory_lock(%s)", (advisory_key("mlplatform.drift.model:m"),))
        waiter = asyncio.create_task(_enter(two, "m"))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        conn.close()
        await asyncio.wait_for(waiter, 5)
    finally:
        one.close()
        two.close()


async def _enter(store, model: str) -> None:
    async with store.exclusive(model):
        pass


def test_old_sqlite_databases_are_migrated(tmp_path):
    path = tmp_path / "drift.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE records (request_id TEXT NOT NULL, row_index INTEGER NOT NULL, model TEXT NOT NULL,"
        " version TEXT NOT NULL, ts REAL NOT NULL, received REAL NOT NULL, inputs BLOB NOT NULL,"
        " prediction REAL, window_id INTEGER, PRIMARY KEY (request_id, row_index));"
        "INSERT INTO records VALUES ('r1', 0, 'm', '1', 1.0, 2.0, '{\"a\": 1}', 0.1, NULL);"
        "INSERT INTO records VALUES ('r1', 1, 'm', '1', 1.0, 2.0, '{\"a\": 2}', 0.2, NULL);"
        "CREATE TABLE windows (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version TEXT NOT NULL,"
        " opened REAL NOT NULL, closed REAL NOT NULL, n_records INTEGER NOT NULL, drift_share REAL NOT NULL,"
        " dataset_drift INTEGER NOT NULL, result BLOB NOT NULL);"
        "CREATE INDEX windows_model ON windows (model, id);"
        "INSERT INTO windows VALUES (7, 'm', '1', 1.0, 2.0, 100, 0.5, 1, '{\"drift_share\": 0.5}');"
        "CREATE TABLE retrain_state (model TEXT PRIMARY KEY, consecutive INTEGER NOT NULL,"
        " episode_active INTEGER NOT NULL, last_trigger REAL);"
        "INSERT INTO retrain_state VALUES ('m', 2, 1, 5.0);"
        "CREATE TABLE retrain_events (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,"
        " version TEXT NOT NULL, ts REAL NOT NULL, reason TEXT NOT NULL, mode TEXT NOT NULL,"
        " outcome TEXT NOT NULL, detail TEXT NOT NULL);"
        "INSERT INTO retrain_events VALUES (1, 'm', '1', 3.0, 'drift', 'off', 'skipped', '');"
    )
    db.commit()
    db.close()
    store = SqliteDriftStore(path)
    try:
        assert sorted(store.record_keys()) == [("m", "1", "r1", 0), ("m", "1", "r1", 1)]
        assert store.insert_records([_rec("r1", 0)]) == {}  # still de-duplicated
        (window,) = store.windows("m")
        assert (window.id, window.n_records, window.result) == (7, 100, {"drift_share": 0.5})
        state = store.retrain_state("m")
        assert (state.consecutive, state.episode_active, state.last_trigger) == (2, True, 5.0)
        assert [e["reason"] for e in store.retrain_events("m")] == ["drift"]
    finally:
        store.close()


def test_a_bad_database_url_fails_with_one_line_naming_the_setting(postgres, tmp_path):
    with pytest.raises(RuntimeError) as bad:
        open_store("postgresql://nobody:s3cret@127.0.0.1:1/none?connect_timeout=1", tmp_path)
    msg = str(bad.value)
    assert msg.startswith("DRIFT_DATABASE_URL: cannot use PostgreSQL at 127.0.0.1:1/none")
    assert "s3cret" not in msg and "\n" not in msg
    with pytest.raises(RuntimeError) as malformed:
        open_store("postgresql://u:pw@host:notaport/db", tmp_path)
    assert "DRIFT_DATABASE_URL" in str(malformed.value) and "pw" not in str(malformed.value)


async def test_two_replicas_on_one_database_count_windows_and_episodes_once(
    tiny_registry, postgres, tmp_path
):
    """Two drift services (two pods) behind a balancer: each gets half of every batch. Every window is
    evaluated once, every record lands in exactly one window, and the drift episode fires once."""
    dsn = postgres.create_database()
    marker = tmp_path / "retrained.txt"
    import sys

    cmd = f"{sys.executable} -c \"open({str(marker)!r}, 'a').write('x')\""
    common = dict(
        database_url=dsn,
        window_size=100,
        retrain_after_windows=2,
        retrain_cooldown_s=0,
        retrain_mode="subprocess",
        retrain_command=cmd,
    )
    a = drift_settings(tiny_registry, tmp_path / "a", **common)
    b = drift_settings(tiny_registry, tmp_path / "b", **common)
    async with running_app(a) as (ca, app_a), running_app(b) as (cb, app_b):
        sent = 0
        for i in range(12):
            batch = records(make_frame(50, seed=100 + i, shift=1.0), MODEL, "1", f"b{i}")
            half = len(batch) // 2
            ra, rb = await asyncio.gather(
                ca.post("/v1/records", json={"records": batch[:half]}),
                cb.post("/v1/records", json={"records": batch[half:]}),
            )
            assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
            sent += len(batch)
        # a sender retrying a batch on the other replica: counted once
        dup = await cb.post(
            "/v1/records", json={"records": records(make_frame(50, seed=100), MODEL, "1", "b0")}
        )
        assert dup.json()["accepted"] == 0
        store = app_a.state.dataplane.store
        windows = store.windows(MODEL)
        assert len(windows) == sent // 100 == 6
        in_windows = [k for w in windows for k in store.window_records(w.id)]
        assert len(in_windows) == len({(r.prediction_id, r.row_index) for r in in_windows}) == sent
        # one episode across both replicas: one trigger, whichever replica closed the windows
        events = await app_a.state.dataplane.retrain_events(MODEL)
        assert len(events) == 1, events
        assert await app_b.state.dataplane.retrain_events(MODEL) == events
        # any replica answers any read
        sa = (await ca.get(f"/v1/models/{MODEL}/drift")).json()
        sb = (await cb.get(f"/v1/models/{MODEL}/drift")).json()
        assert sa == sb and sa["retraining"]["episode_active"] is True
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not marker.exists():
        await asyncio.sleep(0.05)
    assert marker.read_text() == "x"


async def test_database_down_answers_503_and_nothing_accepted_is_lost(tiny_registry, tmp_path):
    """A PostgreSQL of its own, stopped and started under the service: 503 with an error body while it
    is down (the payload logger re-sends on 503), and the same batch is accepted once it is back."""
    from tests.pg import start_postgres

    server = start_postgres(tmp_path / "pg")
    try:
        settings = drift_settings(tiny_registry, tmp_path / "d", database_url=server.dsn(), window_size=1000)
        first = records(make_frame(40, seed=1), MODEL, "1", "up")
        later = records(make_frame(40, seed=2), MODEL, "1", "down")
        async with running_app(settings) as (client, _):
            assert (await client.post("/v1/records", json={"records": first})).json()["accepted"] == 40
            server.stop()
            r = await client.post("/v1/records", json={"records": later})
            assert r.status_code == 503, r.text
            assert r.json() == {"error": "drift detection's database is unavailable; retry later"}
            r = await client.get(f"/v1/models/{MODEL}/drift")
            assert r.status_code == 503 and "error" in r.json()
            assert (await client.get("/v2/health/live")).status_code == 200
            server.restart()
            r = await client.post("/v1/records", json={"records": first + later})
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] == 40 and r.json()["duplicates"] == 40
            status = (await client.get(f"/v1/models/{MODEL}/drift")).json()
            assert status["open_records"] == {"1": 80}
    finally:
        server.stop()


async def test_lock_waiters_leave_the_pool_and_threads_to_the_holder(postgres, tmp_path):
    """Twelve waiters for one model's lock on a pool of eight connections: the holder's own store
    calls still go through (waiters poll with the connection back in the pool), every waiter gets
    the lock after it, and a non-waiting try says at once that the lock is taken."""
    store = open_store(postgres.create_database(), tmp_path)
    try:
        order: list[str] = []
        release = asyncio.Event()

        async def holder() -> None:
            async with store.exclusive("m") as held:
                assert held
                order.append("holder")
                await asyncio.sleep(0.3)  # the waiters pile up
                for _ in range(5):  # needs pool connections and worker threads
                    await asyncio.wait_for(asyncio.to_thread(store.open_count, "m", "1"), 3)
                async with store.exclusive("m", wait=False) as again:
                    order.append(f"try:{again}")
                await release.wait()

        async def waiter(i: int) -> None:
            async with store.exclusive("m") as held:
                assert held
                order.append(f"w{i}")

        h = asyncio.create_task(holder())
        await asyncio.sleep(0.05)
        waiters = [asyncio.create_task(waiter(i)) for i in range(12)]
        await asyncio.sleep(0.6)
        assert order == ["holder", "try:False"]
        release.set()
        await asyncio.wait_for(asyncio.gather(h, *waiters), 15)
        assert sorted(order[2:]) == sorted(f"w{i}" for i in range(12))
    finally:
        store.close()
