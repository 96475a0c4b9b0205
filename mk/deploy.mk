# Deployment area (charts, overlays, Argo CD): see docs/deploy.md.
.PHONY: chart-files chart-values chart-digests render-all deploy-test images

# Copy observability/**/*.rules.yaml into each chart's files/rules/ (Helm cannot read outside the chart).
chart-files: venv
	$(PY) scripts/render.py --sync-chart-files

# Write each service chart's values.yaml and values.schema.json from charts/values-source/
# (one source for the four charts; tests/deploy/test_chart_values.py fails when they are not current).
chart-values: venv
	$(PY) scripts/chart_values.py

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

# Build every service image and GPU variant from services/Dockerfile (needs Docker; not run here):
# `make images [TAG=0.2.0] [SERVICES="model-serving"]`, REGISTRY/PUSH as services/build.sh reads them.
images:
	services/build.sh $(or $(TAG),$(shell python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')) $(SERVICES)
