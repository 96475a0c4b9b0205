# Load area: locust load and soak runs (scripts/load.py, tests/load/), fault-injection tests
# (tests/faults/, part of `make test`). See docs/reliability.md.
# LOAD_ARGS / SOAK_ARGS pass options through, e.g. `make load LOAD_ARGS="--existing --duration 120"`.
LOAD_ARGS ?=
SOAK_ARGS ?=

.PHONY: load-only soak faults-test

load: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(PY) scripts/load.py load $(LOAD_ARGS)
	PATH=$(CURDIR)/$(BIN):$$PATH $(PY) scripts/load.py soak $(SOAK_ARGS)

# Only the short load run (no soak).
load-only: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(PY) scripts/load.py load $(LOAD_ARGS)

# Only the soak run.
soak: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(PY) scripts/load.py soak $(SOAK_ARGS)

# Only the fault-injection tests.
faults-test: venv sysdeps
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -p no:cacheprovider tests/faults tests/load
