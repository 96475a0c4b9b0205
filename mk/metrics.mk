# Metrics: docs/metrics.md, the reference of every family, generated from the metrics catalogue
# (src/mlplatform/core/metrics_catalogue.yaml); tests/observability/test_metric_catalogue.py fails
# when the committed file is stale.
.PHONY: metrics-docs

metrics-docs: venv
	$(PY) scripts/metrics_docs.py
