"""Batch scoring: ``mlplatform batch-score`` (features point-in-time from Feast, parquet out)."""
