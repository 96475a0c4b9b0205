"""The test tree's own rule: no test imports helpers from a test module or from another folder's conftest.

Shared functions live in ``tests/helpers.py`` (or a small support module of one area), shared fixtures
in the nearest common ``conftest.py``. Importing ``tests.unit.x.test_y`` runs that module's tests'
module-level code a second time and ties two test files together; importing another folder's
conftest re-registers its fixtures. The check reads every module under ``tests/`` with ``ast``
(imports inside functions included), so it needs no import of the modules it checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _is_test_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("test_")


def _is_conftest(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "conftest"


def _imported(tree: ast.AST, importer: str) -> list[tuple[int, str]]:
    """(line, module) for every module ``tree`` imports, relative imports resolved against ``importer``;
    ``from pkg import mod`` yields both ``pkg`` and ``pkg.mod`` (it may name a module)."""
    package = importer.rsplit(".", 1)[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def forbidden_imports(importer: str, source: str) -> list[str]:
    """The imports of module ``importer`` (dotted name, source ``source``) that break the rule."""
    package = importer.rsplit(".", 1)[0]
    bad = []
    for line, name in _imported(ast.parse(source), importer):
        if not name.startswith("tests."):
            continue
        if _is_test_module(name) and name != importer:
            bad.append(f"{importer}:{line} imports test module {name}")
        elif _is_conftest(name) and name.rsplit(".", 1)[0] != package:
            bad.append(f"{importer}:{line} imports another folder's conftest {name}")
    return bad


@pytest.mark.parametrize(
    ("source", "count"),
    [
        ("from tests.unit.serving.test_app import v2_body", 1),
        ("import tests.unit.serving.test_app", 1),
        ("from tests.unit.serving import test_app", 1),
        ("def f():\n    from tests.deploy.test_argocd import project_allows", 1),
        ("from .test_app import TYPES", 1),
        ("from tests.unit.features.conftest import build_small_repo", 1),
        ("from ..features.conftest import SmallRepo", 1),
        ("from tests.unit.serving.conftest import make_settings", 0),
        ("from .conftest import make_settings", 0),
        ("from tests.helpers import v2_body, wait_until", 0),
        ("from tests.unit.serving.registry_models import FEATURES", 0),
        ("import test_something_installed", 0),
    ],
)
def test_the_rule_flags_what_it_should(source: str, count: int) -> None:
    assert len(forbidden_imports("tests.unit.serving.test_new", source)) == count, source


def test_no_test_imports_from_a_test_module_or_another_folders_conftest() -> None:
    modules = sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)
    assert len(modules) > 50  # the walk found the tree
    bad = [b for p in modules for b in forbidden_imports(_module_name(p), p.read_text())]
    assert not bad, "move shared helpers to tests/helpers.py or an area support module:\n" + "\n".join(bad)
