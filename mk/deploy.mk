# Deployment area (charts, overlays, Argo CD): see docs/deploy.md.
.PHONY: chart-files chart-digests render-all deploy-test

# Copy observability/**/*.rules.yaml into each chart's files/rules/ (Helm cannot read outside the chart).
chart-files: venv
	$(PY) scripts/render.py --sync-chart-files

# Render every environment into rendered/<env>.
render-all: venv tools
	@set -e; for e in dev staging prod; do PATH=$(CURDIR)/$(BIN):$$PATH $(PY) scripts/render.py --env $$e --out rendered/$$e; done

# Only the deployment checks (charts, overlays, Argo CD, images).
deploy-test: venv tools
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -p no:cacheprovider tests/deploy

# After changing a chart: bump its version in Chart.yaml, then record the new digest.
chart-digests: venv
	$(PY) scripts/render.py --record-chart-digests

# promtool checks the rule files in tests/deploy (skipped when missing).
APT_PACKAGES += prometheus
