"""The service charts' ``values.yaml`` and ``values.schema.json``, generated from one source.

The four service charts share almost all of their values and the whole values schema. The source
lives once, in ``charts/values-source/``:

* ``values.yaml.j2``: the common ``values.yaml`` (Jinja2), with a block wherever a chart differs;
* ``<chart>.values.yaml.j2``: one per chart, ``{% extends "values.yaml.j2" %}``, setting its scalars
  and filling those blocks;
* ``values.schema.yaml``: the common JSON schema (as YAML) under ``schema``, and under
  ``charts.<chart>`` the chart's ``gpu``/``rollout`` support and the properties only it has.

``scripts/chart_values.py`` (``make chart-values``) writes ``charts/<chart>/values.yaml`` and
``values.schema.json`` from it; ``--check`` (and ``tests/deploy/test_chart_values.py``) fails when a
committed file is not what the source generates. Helm reads only the generated files, so the
charts stay plain charts (``helm lint``, Argo CD and ``helm install`` need no generator).

The port of each chart is the service's port in :data:`mlplatform.services.SERVICES`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from mlplatform.deploy.render import SERVICE_CHARTS
from mlplatform.services import SERVICES

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SOURCE_DIR = Path("charts") / "values-source"
SCHEMA_SOURCE = "values.schema.yaml"


@dataclass(frozen=True)
class Stale:
    """A generated chart file that differs from what the source generates."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _schema_source(root: Path) -> dict[str, Any]:
    source = yaml.load((root / SOURCE_DIR / SCHEMA_SOURCE).read_text(), Loader=_Loader)
    unknown = set(source["charts"]) - set(SERVICE_CHARTS)
    missing = set(SERVICE_CHARTS) - set(source["charts"])
    if unknown or missing:
        raise ValueError(
            f"{SCHEMA_SOURCE}: charts must be {SERVICE_CHARTS} (unknown {unknown}, missing {missing})"
        )
    return source


def _chart_flags(source: dict[str, Any], chart: str) -> dict[str, Any]:
    spec = source["charts"][chart]
    return {"gpu": bool(spec["gpu"]), "rollout": bool(spec["rollout"])}


def render_values(chart: str, root: Path, source: dict[str, Any] | None = None) -> str:
    """``charts/<chart>/values.yaml`` as the source generates it."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root / SOURCE_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )
    flags = _chart_flags(source or _schema_source(root), chart)
    text = env.get_template(f"{chart}.values.yaml.j2").render(chart=chart, port=SERVICES[chart].port, **flags)
    yaml.load(text, Loader=_Loader)  # a template edit that breaks YAML fails here, not in Helm
    return text


def render_schema(
    chart: str, root: Path, values_text: str | None = None, source: dict[str, Any] | None = None
) -> str:
    """``charts/<chart>/values.schema.json``: the common schema plus the chart's own properties.

    Properties follow the order of the keys in the chart's values.yaml (keys only the schema has,
    such as ``global``, keep their place in the common schema).
    """
    source = source or _schema_source(root)
    spec = source["charts"][chart]
    schema = json.loads(json.dumps(source["schema"]))  # deep copy
    common: dict[str, Any] = schema["properties"]
    common["component"] = {"const": chart}
    common["gpu"]["properties"]["enabled"] = {"type": "boolean"} if spec["gpu"] else {"const": False}
    common["rollout"]["properties"]["enabled"] = {"type": "boolean"} if spec["rollout"] else {"const": False}
    own: dict[str, Any] = spec.get("properties") or {}
    clash = set(own) & set(common)
    if clash:
        raise ValueError(f"{SCHEMA_SOURCE}: {chart} redefines common properties {sorted(clash)}")
    values = yaml.load(
        values_text if values_text is not None else render_values(chart, root, source), Loader=_Loader
    )
    order = list(values)
    merged: dict[str, Any] = {}
    for key, prop in common.items():
        # Chart-only keys go right before the first common key that follows them in values.yaml.
        if key in order:
            for extra in order[: order.index(key)]:
                if extra in own and extra not in merged:
                    merged[extra] = own[extra]
        merged[key] = prop
    for extra in own:
        merged.setdefault(extra, own[extra])
    undeclared = [k for k in values if k not in merged]
    if undeclared:
        raise ValueError(f"{chart}: values.yaml keys without a schema: {undeclared}")
    out = {"$schema": schema.pop("$schema"), "title": f"{chart} chart values", **schema}
    out["properties"] = merged
    return json.dumps(out, indent=2) + "\n"


def generate(root: Path) -> dict[Path, str]:
    """Every generated file (relative to root) and its content."""
    files: dict[Path, str] = {}
    source = _schema_source(root)
    for chart in SERVICE_CHARTS:
        values = render_values(chart, root, source)
        files[Path("charts") / chart / "values.yaml"] = values
        files[Path("charts") / chart / "values.schema.json"] = render_schema(chart, root, values, source)
    return files


def write(root: Path) -> list[Path]:
    """Write the generated files; returns those whose content changed."""
    changed = []
    for rel, text in generate(root).items():
        path = root / rel
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(rel)
    return changed


def check(root: Path) -> list[Stale]:
    """Generated files that are missing or differ from the source (empty: all current)."""
    stale = []
    for rel, text in generate(root).items():
        path = root / rel
        if not path.is_file():
            stale.append(Stale(rel, "missing"))
            continue
        current = path.read_text()
        if current != text:
            lines = [
                i + 1
                for i, (a, b) in enumerate(zip(current.splitlines(), text.splitlines(), strict=False))
                if a != b
            ]
            where = f"first difference at line {lines[0]}" if lines else "length differs"
            stale.append(Stale(rel, f"not what charts/values-source generates ({where})"))
    return stale
