"""Point-in-time correctness of the pandas feature computation (the phase-1 reference path)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlplatform.features.contract import (
    FEATURE_DEFAULTS,
    INT_FEATURES,
    MODEL_FEATURES,
    ON_DEMAND_FEATURE,
    build_training_frame,
    entity_snapshots,
    point_in_time_join,
)
from mlplatform.training.data import generate_transactions

T0 = pd.Timestamp("2026-02-01T12:00:00Z")


def _events(rows: list[tuple[int, int, int, float, int]]) -> pd.DataFrame:
    """(user, merchant, seconds after T0, amount, is_fraud) -> a transactions frame."""
    ts = pd.to_datetime([T0 + pd.Timedelta(seconds=r[2]) for r in rows], utc=True).astype(
        "datetime64[us, UTC]"
    )
    return pd.DataFrame(
        {
            "transaction_id": np.arange(len(rows), dtype=np.int64),
            "user_id": np.array([r[0] for r in rows], dtype=np.int64),
            "merchant_id": np.array([r[1] for r in rows], dtype=np.int64),
            "event_timestamp": ts,
            "amount": np.array([r[3] for r in rows], dtype=np.float64),
            "merchant_category": np.zeros(len(rows), dtype=np.int64),
            "hour": np.asarray(ts.hour, dtype=np.int64),
            "distance_from_home": np.ones(len(rows)),
            "is_fraud": np.array([r[4] for r in rows], dtype=np.int64),
        }
    )


def test_model_features_are_stable() -> None:
    assert MODEL_FEATURES == (
        "amount",
        "hour",
        "merchant_category",
        "distance_from_home",
        "user_txn_count_1h",
        "user_mean_amount_1h",
        "user_txn_count_24h",
        "user_mean_amount_24h",
        "user_txn_count_7d",
        "user_mean_amount_7d",
        "merchant_txn_count_7d",
        "merchant_fraud_rate_30d",
        "amount_over_user_mean_7d",
    )


def test_first_event_of_a_user_has_no_history() -> None:
    frame = build_training_frame(_events([(1, 10, 0, 50.0, 1)]))
    row = frame.iloc[0]
    for name, default in FEATURE_DEFAULTS.items():
        assert row[name] == default, name
    assert row[ON_DEMAND_FEATURE] == 1.0


def test_only_strictly_earlier_events_count() -> None:
    events = _events(
        [
            (1, 10, 0, 10.0, 0),
            (1, 10, 600, 30.0, 1),  # 10 min later
            (1, 11, 601, 500.0, 0),  # one second later: sees both earlier ones, not itself
            (2, 10, 602, 7.0, 0),
        ]
    )
    frame = build_training_frame(events).set_index("transaction_id")
    assert frame.loc[1, "user_txn_count_1h"] == 1
    assert frame.loc[1, "user_mean_amount_1h"] == 10.0
    assert frame.loc[2, "user_txn_count_1h"] == 2
    assert frame.loc[2, "user_mean_amount_7d"] == 20.0
    assert frame.loc[2, ON_DEMAND_FEATURE] == 25.0
    assert frame.loc[3, "user_txn_count_7d"] == 0  # other user's history never leaks
    # merchant statistics are daily snapshots: nothing before the first midnight
    assert frame.loc[3, "merchant_txn_count_7d"] == 0


def test_merchant_stats_are_daily_snapshots() -> None:
    day = 86400
    events = _events(
        [
            (1, 10, 0, 10.0, 0),  # Feb 1 12:00
            (2, 10, 600, 30.0, 1),  # Feb 1 12:10, fraud
            (3, 10, day - 43200, 5.0, 0),  # Feb 2 00:00:00 exactly: in that midnight's snapshot
            (4, 10, day - 43200 + 1, 5.0, 0),  # Feb 2 00:00:01: sees the Feb 2 snapshot (3 events)
            (5, 10, day, 5.0, 0),  # Feb 2 12:00
        ]
    )
    frame = build_training_frame(events).set_index("transaction_id")
    assert frame.loc[2, "merchant_txn_count_7d"] == 0  # its own midnight snapshot is not "before" it
    assert frame.loc[3, "merchant_txn_count_7d"] == 3
    assert frame.loc[3, "merchant_fraud_rate_30d"] == 1 / 3
    assert frame.loc[4, "merchant_txn_count_7d"] == 3


def test_ttl_bounds_staleness() -> None:
    # Last event two hours ago: the 1 h group is expired (default), 24 h and 7 d still hold it.
    frame = build_training_frame(_events([(1, 10, 0, 40.0, 0), (1, 10, 7200, 80.0, 0)])).set_index(
        "transaction_id"
    )
    assert frame.loc[1, "user_txn_count_1h"] == 0
    assert frame.loc[1, "user_mean_amount_1h"] == 0.0
    assert frame.loc[1, "user_txn_count_24h"] == 1
    assert frame.loc[1, "user_mean_amount_24h"] == 40.0


def test_later_values_never_leak_into_earlier_rows() -> None:
    """Appending future events (even huge ones) leaves every earlier row's features unchanged."""
    df = generate_transactions(4000, seed=21)
    cut = df["event_timestamp"].iloc[2999]
    early = df[df["event_timestamp"] <= cut]
    future = df[df["event_timestamp"] > cut].assign(amount=99_999.0, is_fraud=1)
    full = pd.concat([early, future], ignore_index=True)
    a = build_training_frame(early).set_index("transaction_id")[list(MODEL_FEATURES)]
    b = build_training_frame(full).set_index("transaction_id").loc[a.index, list(MODEL_FEATURES)]
    pd.testing.assert_frame_equal(a, b)


def test_join_matches_brute_force_on_generated_data() -> None:
    df = generate_transactions(3000, seed=4)
    frame = build_training_frame(df).set_index("transaction_id")
    rng = np.random.default_rng(0)
    for tid in rng.choice(df["transaction_id"].to_numpy(), 60, replace=False):
        ev = df[df["transaction_id"] == tid].iloc[0]
        before = df[(df["user_id"] == ev.user_id) & (df["event_timestamp"] < ev.event_timestamp)]
        if before.empty or ev.event_timestamp - before["event_timestamp"].max() > pd.Timedelta(
            days=7, seconds=1
        ):
            assert frame.loc[tid, "user_txn_count_7d"] == 0
            continue
        last = before["event_timestamp"].max()
        window = before[before["event_timestamp"] > last - pd.Timedelta(days=7)]
        assert frame.loc[tid, "user_txn_count_7d"] == len(window)
        assert np.isclose(frame.loc[tid, "user_mean_amount_7d"], window["amount"].mean())


def test_dtypes_follow_the_contract() -> None:
    frame = build_training_frame(generate_transactions(2000, seed=2))
    for name in MODEL_FEATURES:
        assert frame[name].dtype == ("int64" if name in INT_FEATURES else "float64"), name
    assert not frame[list(MODEL_FEATURES)].isna().any().any()


def test_snapshots_include_their_own_event() -> None:
    snaps = entity_snapshots(_events([(1, 10, 0, 10.0, 1), (1, 10, 60, 20.0, 0)]))
    users = snaps["user_id"]
    assert list(users["user_txn_count_1h"]) == [1, 2]
    assert list(users["user_mean_amount_1h"]) == [10.0, 15.0]
    merchants = snaps["merchant_id"]
    assert list(merchants["merchant_txn_count_7d"][:1]) == [2]
    assert list(merchants["merchant_fraud_rate_30d"][:1]) == [0.5]
    assert merchants["event_timestamp"].iloc[0] == pd.Timestamp("2026-02-02T00:00:00Z")
    joined = point_in_time_join(_events([(1, 10, 61, 5.0, 0)]), snaps)
    assert joined.loc[0, "user_txn_count_1h"] == 2
