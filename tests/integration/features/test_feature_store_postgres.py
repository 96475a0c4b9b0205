"""The feature store as a shared service on a real PostgreSQL server (the ``postgres`` fixture):
Feast's SQL registry and the PostgreSQL offline store, ``FEATURES_DATABASE_URL`` set.

* two ``mlplatform serve feature-store`` processes on one SQL registry list the same feature views,
  though only one applied them; ``mlplatform materialize`` (the CronJob's command) fills the shared
  Redis online store from the PostgreSQL tables and both replicas answer with the values;
* with the SQLite online store: backfill, then an offline push into the PostgreSQL table and an
  incremental run through the service's API, read back through the service;
* training rows from the PostgreSQL offline store equal the parquet backend's, row for row;
* a database the service cannot use stops start-up with one log line naming the setting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlplatform.features.contract import entity_snapshots
from mlplatform.features.database import DatabaseURL
from mlplatform.features.store import FeatureRepoPaths, write_sources
from mlplatform.training.data import generate_transactions
from tests.integration.features.conftest import REDIS_PASSWORD, check_reads
from tests.procs import running_service, serve_until_exit
from tests.unit.features.small_repo import SmallRepo

pytestmark = pytest.mark.integration

VIEWS = ["merchant_activity", "user_activity_1h", "user_activity_24h", "user_activity_7d"]


@dataclass
class PgRepo:
    repo: SmallRepo
    dsn: str

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "MLPLATFORM_DATA_DIR": str(self.repo.data_dir),
            "FEATURES_AUTH_ENABLED": "false",
            "FEATURES_DATABASE_URL": self.dsn,
            **extra,
        }

    def range_args(self) -> list[str]:
        ts = self.repo.transactions["event_timestamp"]
        start = ts.min() - pd.Timedelta(days=31)
        end = ts.max() + pd.Timedelta(days=1)
        return ["--start", start.isoformat(), "--end", end.isoformat()]


def _pg_repo(postgres, data_dir: Path, rows: int = 2000, seed: int = 23) -> PgRepo:
    """Demo data loaded into a fresh database as the offline store's source tables."""
    dsn = postgres.create_database()
    transactions = generate_transactions(rows, seed)
    snapshots = entity_snapshots(transactions)
    write_sources(snapshots, FeatureRepoPaths(data_dir), DatabaseURL.parse(dsn))
    return PgRepo(SmallRepo(data_dir=data_dir, transactions=transactions, snapshots=snapshots), dsn)


def _materialize_cli(env: dict[str, str], *args: str) -> dict:
    """Run ``mlplatform materialize`` (what the CronJob runs) and return its JSON summary."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "materialize", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _views(url: str) -> list[dict]:
    r = httpx.get(url + "/v1/features/views", timeout=10)
    assert r.status_code == 200, r.text
    return sorted(r.json()["feature_views"], key=lambda v: v["name"])


async def test_two_replicas_share_the_sql_registry_and_the_materialised_values(
    postgres, tmp_path: Path, redis_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    address, _ = redis_server
    pg = _pg_repo(postgres, tmp_path / "data-a")
    redis = {
        "FEATURES_ONLINE_STORE": "redis",
        "FEATURES_REDIS_ADDRESS": address,
        "FEATURES_REDIS_PASSWORD": REDIS_PASSWORD,
        "FEATURES_REGISTRY_CACHE_TTL_SECONDS": "1",
    }
    # replica B has a data directory of its own and never applies: it only sees the shared registry
    env_a = pg.env(**redis)
    env_b = {
        **pg.env(**redis),
        "MLPLATFORM_DATA_DIR": str(tmp_path / "data-b"),
        "FEATURES_APPLY_ON_START": "false",
    }
    with running_service("feature-store", env_a, tmp_path / "logs") as a:
        with running_service("feature-store", env_b, tmp_path / "logs") as b:
            views_a, views_b = _views(a.url), _views(b.url)
            assert [v["name"] for v in views_a] == sorted([*VIEWS, "transaction_ratios"])
            assert views_b == views_a
            assert not (tmp_path / "data-b" / "feature_repo" / "data" / "registry.db").exists()

            # the CronJob's command: a backfill, then an incremental run with nothing new
            summary = _materialize_cli(env_a, *pg.range_args())
            assert sorted(summary["feature_views"]) == VIEWS
            assert all(summary["rows_written"][v] > 0 for v in VIEWS), summary
            again = _materialize_cli(env_a, "--end", pg.range_args()[-1])
            assert sum(again["rows_written"].values()) == 0, again

            await check_reads(a.url, pg.repo)
            await check_reads(b.url, pg.repo)
            # B sees the materialisation recorded in the shared registry (cache TTL 1 s)
            deadline = time.monotonic() + 30
            while not all(v.get("materialized_until") for v in _views(b.url) if v["kind"] == "batch"):
                assert time.monotonic() < deadline, _views(b.url)
                time.sleep(0.2)


async def test_backfill_offline_push_and_incremental_run_with_sqlite(postgres, tmp_path: Path) -> None:
    pg = _pg_repo(postgres, tmp_path / "data", seed=29)
    env = pg.env()
    with running_service("feature-store", env, tmp_path / "logs") as svc:
        # backfill into this data directory's SQLite online store, read through the service
        summary = _materialize_cli(env, *pg.range_args())
        assert all(summary["rows_written"][v] > 0 for v in VIEWS), summary
        await check_reads(svc.url, pg.repo)

        # a fresh row pushed to the offline store only lands in the PostgreSQL table ...
        end = pd.Timestamp(pg.range_args()[-1])
        stamp = end + pd.Timedelta(hours=1)
        row = {
            "user_id": 7_000_001,
            "event_timestamp": stamp.isoformat(),
            "user_txn_count_1h": 3,
            "user_mean_amount_1h": 21.5,
            "user_txn_count_24h": 4,
            "user_mean_amount_24h": 22.5,
            "user_txn_count_7d": 5,
            "user_mean_amount_7d": 23.5,
        }
        r = httpx.post(
            svc.url + "/v1/features/push",
            json={"push_source": "user_activity_push", "to": "offline", "rows": [row]},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        import psycopg

        with psycopg.connect(pg.dsn) as conn:
            stored = conn.execute(
                "SELECT DISTINCT user_mean_amount_7d FROM user_snapshots WHERE user_id = 7000001"
            ).fetchall()
        assert stored == [(23.5,)]
        ref = {"features": ["user_activity_7d:user_mean_amount_7d"], "rows": [{"user_id": 7_000_001}]}
        assert httpx.post(svc.url + "/v1/features/online", json=ref).json()["rows"] == [
            {"user_mean_amount_7d": None}
        ]
        # ... and reaches the online store with the next incremental run (the service's own API)
        r = httpx.post(
            svc.url + "/v1/features/materialize",
            json={"end": (stamp + pd.Timedelta(minutes=1)).isoformat()},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert r.json()["rows_written"]["user_activity_7d"] == 1
        assert httpx.post(svc.url + "/v1/features/online", json=ref).json()["rows"] == [
            {"user_mean_amount_7d": 23.5}
        ]


def test_training_set_from_postgres_equals_the_parquet_one(postgres, tmp_path: Path) -> None:
    """The training pipeline's point-in-time rows for the feature service: PostgreSQL offline store vs
    parquet on the same demo data (same rows, same order, same values, same dtypes)."""
    from mlplatform.training.pipeline import TrainSettings, build_training_frame

    transactions = generate_transactions(3000, 31)
    common = {"rows": 3000, "seed": 31, "materialize": False, "tracking_uri": None}
    parquet = build_training_frame(TrainSettings(data_dir=tmp_path / "parquet", **common), transactions)
    dsn = postgres.create_database()
    on_pg = build_training_frame(
        TrainSettings(data_dir=tmp_path / "pg", feature_database_url=dsn, **common), transactions
    )
    assert not (tmp_path / "pg" / "features" / "sources").exists()  # the sources are tables
    assert len(on_pg) == len(transactions)
    pd.testing.assert_frame_equal(on_pg, parquet)
    # the history features are really there (not all defaults on both sides)
    assert (on_pg["user_txn_count_7d"] > 0).mean() > 0.5

    # the retraining Job (TRAIN_WRITE_SOURCES=false) trains on the shared tables as they are: a row
    # pushed to them meanwhile survives, and the training rows are the same
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM user_snapshots").fetchone()[0]
        conn.execute(
            "INSERT INTO user_snapshots SELECT * FROM user_snapshots ORDER BY event_timestamp LIMIT 1"
        )
    again = build_training_frame(
        TrainSettings(data_dir=tmp_path / "pg2", feature_database_url=dsn, write_sources=False, **common),
        transactions,
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM user_snapshots").fetchone()[0] == before + 1
    pd.testing.assert_frame_equal(again, on_pg)


def test_unusable_database_stops_startup_with_one_line(postgres, tmp_path: Path) -> None:
    """A database that does not exist: exit 2, one critical line naming the setting, no traceback."""
    url = postgres.dsn("no_such_database").replace("mlplatform@", "mlplatform:hunter2@")
    env = {
        **os.environ,
        "MLPLATFORM_DATA_DIR": str(tmp_path / "data"),
        "FEATURES_AUTH_ENABLED": "false",
        "FEATURES_DATABASE_URL": url,
    }
    started = time.monotonic()
    proc = serve_until_exit("feature-store", env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output and "hunter2" not in output
    logged = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    (line,) = [x for x in logged if x["level"] in ("critical", "error")]
    assert line["level"] == "critical"
    assert line["msg"].startswith(
        "feature-store cannot start: FEATURES_DATABASE_URL: cannot use PostgreSQL at "
        f"mlplatform@127.0.0.1:{postgres.port}/no_such_database: "
    )
    assert 'database "no_such_database" does not exist' in line["msg"]
    assert time.monotonic() - started < 60
    # the materialisation command fails the same way (exit 2, one line)
    proc = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "materialize"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "FEATURES_DATABASE_URL: cannot use PostgreSQL" in proc.stdout
