"""A small real Feast repository (SQLite online store, file offline store) built from generated
transactions, and the snapshot values a read of it must return. Unit and integration tests share it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd

from mlplatform.features.contract import entity_snapshots
from mlplatform.features.store import FeatureRepoPaths, apply_definitions, open_store, write_sources
from mlplatform.training.data import generate_transactions


@dataclass
class SmallRepo:
    data_dir: Path
    transactions: pd.DataFrame
    snapshots: dict[str, pd.DataFrame]


def build_small_repo(data_dir: Path, rows: int = 3000, seed: int = 5, materialize: bool = True) -> SmallRepo:
    """Generate transactions, write the snapshot sources, apply the definitions and materialise."""
    transactions = generate_transactions(rows, seed)
    snapshots = entity_snapshots(transactions)
    paths = FeatureRepoPaths(data_dir)
    write_sources(snapshots, paths)
    store = open_store(paths)
    apply_definitions(store, paths)
    ts = transactions["event_timestamp"]
    if not materialize:
        return SmallRepo(data_dir=data_dir, transactions=transactions, snapshots=snapshots)
    store.materialize(
        start_date=ts.min().to_pydatetime() - timedelta(days=31),
        end_date=ts.max().to_pydatetime() + timedelta(days=1),
    )
    return SmallRepo(data_dir=data_dir, transactions=transactions, snapshots=snapshots)


def latest(repo: SmallRepo, key: str, value: int) -> dict:
    """The newest snapshot row of entity ``key`` = ``value`` (what the online store holds for it)."""
    snap = repo.snapshots[key]
    return snap[snap[key] == value].sort_values("event_timestamp").iloc[-1].to_dict()
