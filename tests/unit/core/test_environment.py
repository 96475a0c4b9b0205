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


_SETTERS = {"setdefault", "update", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
#: entry points, which may change their own process environment (cli: drops Feast's multiprocess variables)
_ENTRY_POINTS = {"cli.py"}


def _environ_writes(tree: ast.AST) -> list[int]:
    """Lines that write to ``os.environ`` (item assignment or deletion, a mutating method) or call ``os.putenv``."""
    lines = []
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        for t in targets:
            if isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ":
                lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if (owner == "os.environ" and node.func.attr in _SETTERS) or ast.unparse(
                node.func
            ) == "os.putenv":
                lines.append(node.lineno)
    return lines


def test_no_library_module_writes_the_environment():
    """Only entry points change ``os.environ``; library functions read it (training secrets and MLflow
    credentials write to a mapping they are handed, ``os.environ`` by default, not named here)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if str(rel) in _ENTRY_POINTS:
            continue
        found += [f"{rel}:{line}" for line in _environ_writes(ast.parse(path.read_text()))]
    assert not found, found


def test_the_writes_check_sees_each_form():
    code = 'import os\nos.environ["A"] = "1"\nos.environ.setdefault("B", "1")\nos.putenv("C", "1")\nos.environ.get("D")'
    assert _environ_writes(ast.parse(code)) == [2, 3, 4]


def _cleared(monkeypatch) -> None:
    for key in ENVIRONMENT_DEFAULTS:
        monkeypatch.delenv(key, raising=False)


def _applied() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ENVIRONMENT_DEFAULTS}


def test_an_mlflow_client_leaves_the_environment_alone(monkeypatch):
    from mlplatform.core.registry import RestRegistryClient, mlflow_client

    _cleared(monkeypatch)
    before = dict(os.environ)
    mlflow_client("http://127.0.0.1:9")
    client = RestRegistryClient("http://127.0.0.1:9")
    assert dict(os.environ) == before
    assert client._http.timeout.read == float(ENVIRONMENT_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    assert RestRegistryClient("http://127.0.0.1:9")._http.timeout.read == 3.0


def _cli_commands() -> list[str]:
    import typer.main

    from mlplatform.cli import app

    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_the_cli_has_the_commands_checked_below():
    assert {"serve", "train", "retrain", "batch-score", "materialize", "up", "promote"} <= set(
        _cli_commands()
    )


def test_every_cli_command_applies_them(monkeypatch):
    """``mlplatform <command>``: the defaults are set before the command runs (``--help`` stops it right after)."""
    from typer.testing import CliRunner

    from mlplatform.cli import app

    for command in _cli_commands():
        _cleared(monkeypatch)
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert _applied() == dict(ENVIRONMENT_DEFAULTS), command


def test_the_model_cache_prepare_child_applies_them(monkeypatch):
    import io

    from mlplatform.serving import cache

    _cleared(monkeypatch)
    monkeypatch.setattr("sys.stdin", io.StringIO("{}"))  # no job: prepare fails, after start-up
    assert cache.main() == 1
    assert _applied() == dict(ENVIRONMENT_DEFAULTS)
