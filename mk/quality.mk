# Model quality (drift detection's labels, CBPE, segments): NannyML for the CBPE parity test.
# NannyML drags a heavy dependency set (xgboost, lightgbm, FLAML, cloud file systems), so it gets its
# own virtual environment, pinned in requirements/nannyml.txt, instead of the platform's lock file.
NANNYML_VENV := .venv-nannyml

$(eval $(call side_venv,nannyml,$(NANNYML_VENV),requirements/nannyml.txt))

# the CBPE parity test runs NannyML from that environment
test test-unit: nannyml-venv
