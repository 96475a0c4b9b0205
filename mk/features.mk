# Feature store area (Feast repo, feature-store service): see docs/features.md.
# The Redis integration tests start a real redis-server on a free port.
APT_PACKAGES += redis-server

.PHONY: features-test features-bench

# Only the feature-store and training tests.
features-test: venv
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/features tests/unit/training tests/integration/features

# Online read latency: the service vs `feast serve` on the same repository and store.
features-bench: venv
	$(PY) scripts/bench/bench_features.py
