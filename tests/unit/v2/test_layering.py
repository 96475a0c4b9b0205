"""Package layering, checked on the source with ``ast`` (so a lazy import inside a function counts too).

* The V2 package is a leaf: serving and explainability build on it, it builds on neither, and
  explainability does not import serving.
* The feature contract lives with the feature store: ``features/`` never imports ``training/``
  (training builds on the feature store, not the other way round), and the contract module itself
  imports nothing of the platform, so training, batch scoring and serving can all read it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mlplatform

PACKAGE = Path(mlplatform.__file__).parent


def imported_modules(folder: str) -> dict[str, set[str]]:
    """``mlplatform.*`` modules imported anywhere in each file of ``folder``."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlplatform"):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("mlplatform"))
        found[path.relative_to(PACKAGE / folder).as_posix()] = names
    return found


def test_v2_imports_only_itself_and_core_errors():
    for name, modules in imported_modules("v2").items():
        outside = {m for m in modules if not m.startswith("mlplatform.v2")} - {"mlplatform.core.errors"}
        assert not outside, f"v2/{name} imports {sorted(outside)}"


def test_explain_does_not_import_serving():
    for name, modules in imported_modules("explain").items():
        serving = sorted(m for m in modules if m.startswith("mlplatform.serving"))
        assert not serving, f"explain/{name} imports {serving}"


def test_serving_and_explain_read_requests_with_the_v2_codec():
    for folder, file in (("serving", "dataplane.py"), ("explain", "inputs.py")):
        assert "mlplatform.v2.codec" in imported_modules(folder)[file], f"{folder}/{file}"


def test_features_does_not_import_training():
    for name, modules in imported_modules("features").items():
        training = sorted(m for m in modules if m.startswith("mlplatform.training"))
        assert not training, f"features/{name} imports {training}"


def test_the_feature_contract_is_a_leaf():
    assert imported_modules("features")["contract.py"] == set()
    assert not (PACKAGE / "training" / "features.py").exists()
