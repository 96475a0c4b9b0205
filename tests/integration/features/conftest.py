"""The check that a running feature-store service answers with the snapshot values (the
``redis_server`` fixture is in ``tests/integration/conftest.py``)."""

from __future__ import annotations

import pytest

from mlplatform.features.client import FeatureStoreClient
from tests.redis_proc import REDIS_PASSWORD
from tests.unit.features.small_repo import SmallRepo, latest

__all__ = ["REDIS_PASSWORD", "check_reads"]


async def check_reads(url: str, repo: SmallRepo) -> None:
    """The service at ``url`` answers the feature service for the last five transactions with the
    latest snapshot values of their user and merchant."""
    client = FeatureStoreClient(url, timeout_s=2.0, retries=1)
    try:
        tx = repo.transactions.tail(5)
        rows = [
            {"user_id": int(u), "merchant_id": int(m), "amount": 80.0}
            for u, m in zip(tx["user_id"], tx["merchant_id"], strict=True)
        ]
        got = await client.get_online_features("fraud_detection_v1", rows)
        for row, fetched in zip(rows, got, strict=True):
            user = latest(repo, "user_id", row["user_id"])
            merchant = latest(repo, "merchant_id", row["merchant_id"])
            assert fetched["user_txn_count_24h"] == user["user_txn_count_24h"]
            assert fetched["user_mean_amount_7d"] == pytest.approx(user["user_mean_amount_7d"])
            assert fetched["merchant_txn_count_7d"] == merchant["merchant_txn_count_7d"]
            assert fetched["amount_over_user_mean_7d"] == pytest.approx(80.0 / user["user_mean_amount_7d"])
    finally:
        await client.aclose()
