"""The transaction generator: deterministic, realistic fraud rate, learnable label."""

from __future__ import annotations

import pandas as pd
import pytest

from mlplatform.training.data import RAW_COLUMNS, generate_transactions


def test_same_seed_gives_same_frame() -> None:
    a = generate_transactions(5000, seed=1)
    b = generate_transactions(5000, seed=1)
    pd.testing.assert_frame_equal(a, b)


def test_different_seed_gives_different_frame() -> None:
    a = generate_transactions(5000, seed=1)
    b = generate_transactions(5000, seed=2)
    assert not a["amount"].equals(b["amount"])


@pytest.mark.parametrize("seed", [3, 7, 11])
def test_fraud_rate_is_realistic(seed: int) -> None:
    df = generate_transactions(50_000, seed=seed)
    assert 0.01 <= df["is_fraud"].mean() <= 0.03


def test_schema_and_ordering() -> None:
    df = generate_transactions(3000, seed=5)
    assert tuple(df.columns) == RAW_COLUMNS
    assert len(df) == 3000
    for col in ("transaction_id", "user_id", "merchant_id", "merchant_category", "hour", "is_fraud"):
        assert df[col].dtype == "int64", col
    for col in ("amount", "distance_from_home"):
        assert df[col].dtype == "float64", col
    assert str(df["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert df["event_timestamp"].is_monotonic_increasing
    assert df["event_timestamp"].is_unique  # whole seconds, one event each: "strictly before" is exact
    assert (df["event_timestamp"].dt.microsecond == 0).all()
    assert (df["hour"] == df["event_timestamp"].dt.hour).all()
    span = df["event_timestamp"].max() - df["event_timestamp"].min()
    assert span >= pd.Timedelta(days=21)
    assert (df["amount"] > 0).all()


def test_fraud_depends_on_history_and_request_fields() -> None:
    df = generate_transactions(40_000, seed=9)
    fraud, legit = df[df["is_fraud"] == 1], df[df["is_fraud"] == 0]
    assert fraud["distance_from_home"].median() > 5 * legit["distance_from_home"].median()
    assert fraud["amount"].median() > 1.5 * legit["amount"].median()


def test_rejects_tiny_row_counts() -> None:
    with pytest.raises(ValueError, match="rows"):
        generate_transactions(10, seed=1)
