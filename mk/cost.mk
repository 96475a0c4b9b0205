# Cost-per-pod area: scripts/bench/bench_cost.py compares each service's start-up time and resident
# memory with MLServer serving the same forest. MLServer lives in its own venv (.bench-mlserver): its
# pins (fastapi, uvicorn, protobuf ...) are not the project's, and it is a benchmark baseline only.
MLSERVER_VERSION := 1.7.1
MLSERVER_VENV := .bench-mlserver

.PHONY: bench-mlserver

$(MLSERVER_VENV)/.installed: mk/cost.mk requirements/lock.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install --quiet mlserver==$(MLSERVER_VERSION) mlserver-sklearn==$(MLSERVER_VERSION) \
	  scikit-learn==$$(grep -E '^scikit-learn==' requirements/lock.txt | cut -d= -f3)
	touch $@

bench-mlserver: $(MLSERVER_VENV)/.installed

bench: bench-mlserver
