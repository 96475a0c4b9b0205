"""Environment defaults are set in one start-up place (core.environment), never by library functions."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import mlplatform
from mlplatform.core.environment import ENVIRONMENT_DEFAULTS, apply_environment_defaults

PACKAGE = Path(mlplatform.__file__).parent


def test_defaults_fill_only_what_is_unset():
    env = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "true"}
    apply_environment_defaults(env)
    assert env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"  # the operator's value wins
    assert env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "true"
    assert set(env) == set(ENVIRONMENT_DEFAULTS)


def test_no_other_module_names_these_variables():
    """The variables appear as string constants only in core/environment.py (checked with ``ast``)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "core" / "environment.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ENVIRONMENT_DEFAULTS:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value}")
    assert not found, found


def test_building_an_app_applies_them(monkeypatch, tmp_path):
    from mlplatform.drift.app import create_app
    from mlplatform.drift.settings import DriftSettings

    for key in ENVIRONMENT_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    create_app(DriftSettings(data_dir=tmp_path, auth_enabled=False))
    assert {k: os.environ.get(k) for k in ENVIRONMENT_DEFAULTS} == dict(ENVIRONMENT_DEFAULTS)
