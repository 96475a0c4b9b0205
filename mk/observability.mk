# Observability: Prometheus rules/alerts, Grafana dashboards, log and trace pipeline configs.
# promtool + prometheus (Debian's prometheus package, 2.42) run the rule unit tests and the live check.
APT_PACKAGES += prometheus

.PHONY: dashboards obs-check obs-test scrape-config

# Rebuild observability/grafana/dashboards/*.json from observability/grafana/build_dashboards.py
# (Grafana's grafana-foundation-sdk builders, pinned in requirements/lock.txt).
dashboards: venv
	$(PY) observability/grafana/build_dashboards.py

# Static checks: promtool check + unit tests of every rule file, dashboards up to date.
obs-check: venv sysdeps
	promtool check rules observability/prometheus/rules/*.yaml
	cd observability/prometheus/tests && promtool test rules *.test.yaml
	$(PY) observability/grafana/build_dashboards.py --check

# The observability test suite (static checks, then the live Prometheus + services + tracing check).
obs-test: venv tools sysdeps
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -p no:cacheprovider tests/observability

# Print a Prometheus scrape config for `make run` (services on their default ports).
scrape-config: venv
	@$(PY) observability/prometheus/scrape_config.py
