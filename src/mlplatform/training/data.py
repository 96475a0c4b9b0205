"""Deterministic generator of demo card transactions with a learnable fraud label.

Users and merchants are the entities (``user_id``, ``merchant_id`` as int64). Legitimate
spending follows each user's usual amount, daytime hours and a small distance from home.
Fraud comes in bursts on a compromised card: several transactions within about an hour, at
night, far from home, for amounts well above the user's usual amount, often at a few risky
merchants. So the label depends on the request fields *and* on the user's and merchant's
history (burst counts, amount over the user's mean, merchant fraud rate).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2026-01-05T00:00:00Z")
DAYS = 42
N_CATEGORIES = 12
RAW_COLUMNS = (
    "transaction_id",
    "user_id",
    "merchant_id",
    "event_timestamp",
    "amount",
    "merchant_category",
    "hour",
    "distance_from_home",
    "is_fraud",
)

# Hour-of-day weights: legitimate spending peaks in the day, fraud at night.
_DAY_HOURS = np.array([1, 1, 1, 1, 1, 2, 4, 6, 8, 9, 10, 10, 11, 10, 9, 9, 9, 10, 10, 9, 7, 5, 3, 2], float)
_NIGHT_HOURS = np.array([9, 10, 10, 9, 8, 6, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 4, 5, 7, 8], float)


def raw_path(data_dir: Path) -> Path:
    """Where the generated transactions live: ``<data_dir>/raw/transactions.parquet``."""
    return Path(data_dir) / "raw" / "transactions.parquet"


def _unique_seconds(ts: np.ndarray) -> np.ndarray:
    """Nudge duplicate integer timestamps forward until every event has its own second."""
    ts = np.sort(ts)
    while True:
        dup = np.concatenate([[False], ts[1:] <= ts[:-1]])
        if not dup.any():
            return ts
        ts = np.maximum.accumulate(ts + dup.astype(ts.dtype))


def generate_transactions(rows: int, seed: int) -> pd.DataFrame:
    """Generate ``rows`` transactions; the same ``(rows, seed)`` always gives the same frame.

    Timestamps are unique whole seconds (UTC) over six weeks, sorted; ``transaction_id`` is the
    row number in time order.
    """
    if rows < 100:
        raise ValueError("rows must be at least 100")
    rng = np.random.default_rng(seed)
    n_users = max(50, rows // 40)
    n_merchants = max(20, rows // 400)

    user_weight = rng.gamma(2.0, 1.0, n_users)
    user_weight /= user_weight.sum()
    user_usual = rng.lognormal(3.5, 0.6, n_users)  # usual amount, about 33
    user_home_km = rng.lognormal(1.5, 0.5, n_users)

    merchant_category = rng.integers(0, N_CATEGORIES, n_merchants)
    merchant_pop = 1.0 / np.arange(1, n_merchants + 1) ** 0.8
    merchant_pop = rng.permutation(merchant_pop / merchant_pop.sum())
    risky = rng.permutation(n_merchants)[: max(2, n_merchants // 12)]
    category_mult = rng.lognormal(0.0, 0.4, N_CATEGORIES)

    # Fraud bursts: about 2 % of all rows.
    n_bursts = max(1, round(rows * 0.02 / 3.5))
    burst_sizes = rng.integers(1, 7, n_bursts)
    n_fraud = int(burst_sizes.sum())
    n_legit = rows - n_fraud

    # Legitimate transactions.
    l_user = rng.choice(n_users, n_legit, p=user_weight)
    l_day = rng.integers(0, DAYS, n_legit)
    l_hour = rng.choice(24, n_legit, p=_DAY_HOURS / _DAY_HOURS.sum())
    l_ts = l_day * 86400 + l_hour * 3600 + rng.integers(0, 3600, n_legit)
    l_merchant = rng.choice(n_merchants, n_legit, p=merchant_pop)
    l_amount = (
        user_usual[l_user] * rng.lognormal(0.0, 0.45, n_legit) * category_mult[merchant_category[l_merchant]]
    )
    l_dist = rng.exponential(user_home_km[l_user])
    travel = rng.random(n_legit) < 0.03  # legitimate spending while travelling
    l_dist = np.where(travel, 40.0 + rng.exponential(300.0, n_legit), l_dist)
    l_label = (rng.random(n_legit) < 0.001).astype(np.int64)

    # Fraud bursts on compromised cards.
    b_user = rng.integers(0, n_users, n_bursts)
    b_start = (
        rng.integers(0, DAYS, n_bursts) * 86400
        + rng.choice(24, n_bursts, p=_NIGHT_HOURS / _NIGHT_HOURS.sum()) * 3600
        + rng.integers(0, 3600, n_bursts)
    )
    f_burst = np.repeat(np.arange(n_bursts), burst_sizes)
    first = np.concatenate([[0], np.cumsum(burst_sizes)[:-1]])
    gaps = rng.exponential(360.0, n_fraud).astype(np.int64) + 30
    gaps[first] = 0
    offsets = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], burst_sizes)
    f_user = b_user[f_burst]
    f_ts = b_start[f_burst] + offsets
    f_merchant = np.where(
        rng.random(n_fraud) < 0.6,
        rng.choice(risky, n_fraud),
        rng.choice(n_merchants, n_fraud, p=merchant_pop),
    )
    f_amount = user_usual[f_user] * rng.lognormal(1.2, 0.6, n_fraud)
    card_present = rng.random(n_fraud) < 0.65  # the rest is card-not-present, near home
    f_dist = np.where(
        card_present, 40.0 + rng.exponential(300.0, n_fraud), rng.exponential(user_home_km[f_user])
    )
    f_label = (rng.random(n_fraud) < 0.95).astype(np.int64)

    user = np.concatenate([l_user, f_user]).astype(np.int64)
    ts = np.concatenate([l_ts, f_ts]).astype(np.int64)
    merchant = np.concatenate([l_merchant, f_merchant]).astype(np.int64)
    amount = np.round(np.concatenate([l_amount, f_amount]), 2)
    dist = np.round(np.concatenate([l_dist, f_dist]), 3)
    label = np.concatenate([l_label, f_label])

    order = np.argsort(ts, kind="stable")
    unique_ts = _unique_seconds(ts[order])
    timestamps = (START + pd.to_timedelta(unique_ts, unit="s")).astype("datetime64[us, UTC]")
    df = pd.DataFrame(
        {
            "transaction_id": np.arange(rows, dtype=np.int64),
            "user_id": user[order] + 1000,
            "merchant_id": merchant[order] + 50000,
            "event_timestamp": timestamps,
            "amount": np.maximum(amount[order], 0.5),
            "merchant_category": merchant_category[merchant[order]].astype(np.int64),
            "hour": np.asarray(timestamps.hour, dtype=np.int64),
            "distance_from_home": dist[order],
            "is_fraud": label[order].astype(np.int64),
        }
    )
    return df


def write_transactions(df: pd.DataFrame, data_dir: Path) -> Path:
    """Write the transactions to ``<data_dir>/raw/transactions.parquet`` and return the path."""
    path = raw_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path
