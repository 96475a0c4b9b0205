"""Model feature definitions and their point-in-time correct computation with pandas.

The column list here is the contract between training, the feature store and serving:

* request-time fields sent with each inference request (:data:`REQUEST_FEATURES`);
* entity history features served by the feature store (:data:`FEATURE_GROUPS`), stored as
  per-entity *snapshots*: at each transaction of an entity, the aggregates over the window
  ending at (and including) that transaction;
* the on-demand ratio :data:`ON_DEMAND_FEATURE` computed at request time.

For a transaction at time ``t`` the history features are read from the entity's latest snapshot
at or before ``t - 1 s`` (timestamps are unique whole seconds, so only strictly earlier events
count) and no older than the group's TTL; with no such snapshot the feature takes its default
(:data:`FEATURE_DEFAULTS`). This is exactly Feast's point-in-time join with the feature view TTL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

ENTITY_KEYS = ("user_id", "merchant_id")
TIMESTAMP_COLUMN = "event_timestamp"
LABEL_COLUMN = "is_fraud"
#: How far before the event the history is read: everything strictly before the event's second.
LOOKUP_OFFSET = timedelta(seconds=1)

REQUEST_FEATURES: tuple[str, ...] = ("amount", "hour", "merchant_category", "distance_from_home")


@dataclass(frozen=True)
class FeatureGroup:
    """A set of history features of one entity with the same freshness bound (one Feast feature view)."""

    name: str
    entity: str  # entity key column
    features: tuple[str, ...]
    ttl: timedelta


FEATURE_GROUPS: tuple[FeatureGroup, ...] = (
    FeatureGroup(
        "user_activity_1h", "user_id", ("user_txn_count_1h", "user_mean_amount_1h"), timedelta(hours=1)
    ),
    FeatureGroup(
        "user_activity_24h", "user_id", ("user_txn_count_24h", "user_mean_amount_24h"), timedelta(hours=24)
    ),
    FeatureGroup(
        "user_activity_7d", "user_id", ("user_txn_count_7d", "user_mean_amount_7d"), timedelta(days=7)
    ),
    FeatureGroup(
        "merchant_activity",
        "merchant_id",
        ("merchant_txn_count_7d", "merchant_fraud_rate_30d"),
        timedelta(days=7),
    ),
)

ON_DEMAND_FEATURE = "amount_over_user_mean_7d"
HISTORY_FEATURES: tuple[str, ...] = tuple(f for g in FEATURE_GROUPS for f in g.features)

#: The model input columns, in order. Stable: serving, drift and explainability build on it.
MODEL_FEATURES: tuple[str, ...] = (*REQUEST_FEATURES, *HISTORY_FEATURES, ON_DEMAND_FEATURE)

#: "long" (int64) columns; every other model feature is "double" (float64).
INT_FEATURES: frozenset[str] = frozenset(
    {
        "hour",
        "merchant_category",
        "user_txn_count_1h",
        "user_txn_count_24h",
        "user_txn_count_7d",
        "merchant_txn_count_7d",
    }
)

#: Value a history feature takes when the entity has no snapshot within the TTL.
FEATURE_DEFAULTS: dict[str, float | int] = {f: (0 if f in INT_FEATURES else 0.0) for f in HISTORY_FEATURES}

_WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


def feature_dtype(name: str) -> str:
    """The numpy dtype of a model feature: ``int64`` or ``float64``."""
    return "int64" if name in INT_FEATURES else "float64"


def amount_over_user_mean(amount: pd.Series | np.ndarray, user_mean_7d: pd.Series | np.ndarray) -> np.ndarray:
    """The on-demand ratio: amount over the user's 7-day mean amount (1.0 when there is no mean)."""
    amount = np.asarray(amount, dtype=np.float64)
    mean = np.nan_to_num(np.asarray(user_mean_7d, dtype=np.float64), nan=0.0)
    out = np.ones_like(amount)
    np.divide(amount, mean, out=out, where=mean > 0)
    return out


def _window_stats(
    keys: np.ndarray, secs: np.ndarray, values: np.ndarray, window_s: int
) -> tuple[np.ndarray, np.ndarray]:
    """Count and sum of ``values`` over ``(t - window, t]`` per entity; rows sorted by (key, t)."""
    # Composite key keeps the search inside one entity: entities are 2**32 seconds apart.
    composite = keys.astype(np.int64) * (1 << 32) + secs
    left = np.searchsorted(composite, composite - window_s, side="right")
    idx = np.arange(len(composite))
    csum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (idx - left + 1).astype(np.int64), csum[idx + 1] - csum[left]


def _sorted_by(df: pd.DataFrame, key: str) -> tuple[pd.DataFrame, np.ndarray]:
    out = df.sort_values([key, TIMESTAMP_COLUMN], kind="stable").reset_index(drop=True)
    secs = (out[TIMESTAMP_COLUMN].astype("int64") // 10**6).to_numpy()  # datetime64[us] -> seconds
    return out, secs


def user_snapshots(transactions: pd.DataFrame) -> pd.DataFrame:
    """Per user and transaction time: count and mean amount over the last 1 h, 24 h and 7 d (inclusive)."""
    df, secs = _sorted_by(transactions[["user_id", TIMESTAMP_COLUMN, "amount"]], "user_id")
    keys = df["user_id"].to_numpy()
    out = df[["user_id", TIMESTAMP_COLUMN]].copy()
    for label in ("1h", "24h", "7d"):
        count, total = _window_stats(keys, secs, df["amount"].to_numpy(np.float64), _WINDOWS[label])
        out[f"user_txn_count_{label}"] = count
        out[f"user_mean_amount_{label}"] = total / count
    return out


def merchant_snapshots(transactions: pd.DataFrame) -> pd.DataFrame:
    """Per merchant, daily at 00:00 UTC: 7-day volume and 30-day fraud rate over events up to that instant.

    Merchant statistics are a daily batch job (a merchant has hundreds of transactions a day, so
    per-transaction snapshots would add nothing but rows). A snapshot exists for every midnight
    after the merchant's first transaction up to the midnight after its last one, while the
    merchant had transactions in the last 7 days.
    """
    df, secs = _sorted_by(transactions[["merchant_id", TIMESTAMP_COLUMN, LABEL_COLUMN]], "merchant_id")
    keys = df["merchant_id"].to_numpy()
    day = 86400
    first_day = secs.min() // day + 1
    last_day = secs.max() // day + 1
    days = np.arange(first_day, last_day + 1, dtype=np.int64) * day
    merchants = np.unique(keys)
    m_keys = np.repeat(merchants, len(days))
    m_secs = np.tile(days, len(merchants))
    composite = keys.astype(np.int64) * (1 << 32) + secs
    at = m_keys.astype(np.int64) * (1 << 32) + m_secs
    right = np.searchsorted(composite, at, side="right")  # events with ts <= midnight
    left_7d = np.searchsorted(composite, at - _WINDOWS["7d"], side="right")
    left_30d = np.searchsorted(composite, at - _WINDOWS["30d"], side="right")
    csum = np.concatenate([[0.0], np.cumsum(df[LABEL_COLUMN].to_numpy(np.float64))])
    count_7d = right - left_7d
    count_30d = right - left_30d
    keep = count_30d > 0
    frauds = csum[right] - csum[left_30d]
    return pd.DataFrame(
        {
            "merchant_id": m_keys[keep],
            TIMESTAMP_COLUMN: pd.to_datetime(m_secs[keep], unit="s", utc=True).astype("datetime64[us, UTC]"),
            "merchant_txn_count_7d": count_7d[keep].astype(np.int64),
            "merchant_fraud_rate_30d": frauds[keep] / count_30d[keep],
        }
    )


def entity_snapshots(transactions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The feature-store source tables: ``{"user_id": user snapshots, "merchant_id": merchant snapshots}``."""
    return {"user_id": user_snapshots(transactions), "merchant_id": merchant_snapshots(transactions)}


def point_in_time_join(events: pd.DataFrame, snapshots: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Attach history features to ``events`` as of ``event_timestamp - 1 s``, within each group's TTL.

    ``events`` needs ``user_id``, ``merchant_id``, ``event_timestamp`` and the request fields; the
    result has the same rows in the same order plus every history feature and the on-demand ratio.
    """
    out = events.reset_index(drop=True).copy()
    out["_row"] = np.arange(len(out))
    out["_lookup_ts"] = out[TIMESTAMP_COLUMN] - pd.Timedelta(LOOKUP_OFFSET)
    for group in FEATURE_GROUPS:
        snap = snapshots[group.entity][[group.entity, TIMESTAMP_COLUMN, *group.features]]
        snap = snap.rename(columns={TIMESTAMP_COLUMN: "_feature_ts"}).sort_values(
            "_feature_ts", kind="stable"
        )
        left = out[["_row", group.entity, "_lookup_ts"]].sort_values("_lookup_ts", kind="stable")
        joined = pd.merge_asof(
            left,
            snap,
            left_on="_lookup_ts",
            right_on="_feature_ts",
            by=group.entity,
            direction="backward",
            tolerance=pd.Timedelta(group.ttl),
            allow_exact_matches=True,
        ).set_index("_row")
        for feature in group.features:
            values = joined[feature].reindex(out["_row"]).to_numpy()
            out[feature] = (
                pd.Series(values).fillna(FEATURE_DEFAULTS[feature]).astype(feature_dtype(feature)).to_numpy()
            )
    out[ON_DEMAND_FEATURE] = amount_over_user_mean(out["amount"], out["user_mean_amount_7d"])
    for feature in REQUEST_FEATURES:
        out[feature] = out[feature].astype(feature_dtype(feature))
    return out.drop(columns=["_row", "_lookup_ts"])


def build_training_frame(transactions: pd.DataFrame) -> pd.DataFrame:
    """Every transaction with its point-in-time correct model features and the label (pandas path)."""
    return point_in_time_join(transactions, entity_snapshots(transactions))
