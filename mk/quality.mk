# Model quality (drift detection's labels, CBPE, segments): NannyML for the CBPE parity test.
# NannyML drags a heavy dependency set (xgboost, lightgbm, FLAML, cloud file systems), so it gets its
# own virtual environment, pinned in requirements/nannyml.txt, instead of the platform's lock file.
NANNYML_VENV := .venv-nannyml

.PHONY: nannyml-venv

$(NANNYML_VENV)/.installed: requirements/nannyml.txt
	$(PYTHON) -m venv $(NANNYML_VENV)
	$(NANNYML_VENV)/bin/pip install --quiet --upgrade pip==25.3
	$(NANNYML_VENV)/bin/pip install --quiet -r requirements/nannyml.txt
	touch $@

nannyml-venv: $(NANNYML_VENV)/.installed

# the CBPE parity test runs NannyML from that environment
test test-unit: nannyml-venv
