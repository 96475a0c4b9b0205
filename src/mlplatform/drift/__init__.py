"""Drift detection: payload ingestion, Evidently-compatible drift statistics, retraining triggers."""
