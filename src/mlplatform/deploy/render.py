"""Render the platform's Kubernetes manifests with the pinned Helm 3 and kubectl (kustomize).

Used by ``scripts/render.py`` (``make render ENV=prod``), by the deploy tests and by the policy
tests, which evaluate every object of every overlay::

    from mlplatform.deploy.render import render_overlay
    objects = render_overlay("prod")  # list of dicts, one per Kubernetes object

Tools are looked up in ``<repo>/.venv/bin`` first (``make tools`` puts Helm 3.17.2 and kubectl
1.32.3 there), then on ``PATH``. Helm 4 is refused.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "prod")
SERVICE_CHARTS: tuple[str, ...] = ("model-serving", "feature-store", "drift-detection", "explainability")
LIBRARY_CHART = "mlplatform-lib"
#: The text model's release: the model-serving chart installed a second time in every overlay, serving
#: only the summarizer (kubernetes/overlays/<env>/values/model-serving-text.yaml).
TEXT_RELEASE = "model-serving-text"
#: Every Helm release of an overlay -> its chart (one per service chart, plus the text release).
RELEASES: dict[str, str] = {**{chart: chart for chart in SERVICE_CHARTS}, TEXT_RELEASE: "model-serving"}
KUSTOMIZE_FLAGS: tuple[str, ...] = ("--enable-helm", "--load-restrictor", "LoadRestrictionsNone")
# Prometheus rule files under observability/ that the charts ship as byte-identical copies
# (each file in exactly one chart, listed in that chart's values prometheusRule.files).
RULE_SOURCE_GLOBS: tuple[str, ...] = ("prometheus/rules/*.yaml", "prometheus-adapter/*.rules.yaml")


class RenderError(RuntimeError):
    """A chart or overlay failed to render; the message carries the tool's stderr."""


def find_repo_root(start: Path | None = None) -> Path:
    """The checkout holding ``kubernetes/overlays`` and ``charts`` (searched upwards from ``start``)."""
    candidates: list[Path] = []
    for base in (start or Path.cwd(), Path(__file__).resolve()):
        base = base.resolve()
        candidates.extend([base, *base.parents])
    for path in candidates:
        if (path / "kubernetes" / "overlays").is_dir() and (path / "charts").is_dir():
            return path
    raise RenderError("cannot find the repository root (a folder with kubernetes/overlays and charts/)")


def find_tool(name: str, root: Path | None = None) -> Path:
    """``helm`` or ``kubectl``: ``<root>/.venv/bin`` first, then ``PATH``."""
    root = root or find_repo_root()
    local = root / ".venv" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    if found:
        return Path(found)
    raise RenderError(f"{name} not found in {local.parent} or on PATH; run `make tools`")


def _tool_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{root / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # Keep Helm away from the user's repositories and caches: charts here are local.
    env.setdefault("HELM_CACHE_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "mlplatform-helm-cache"))
    return env


def _run(cmd: list[str], root: Path) -> str:
    proc = subprocess.run(cmd, cwd=root, env=_tool_env(root), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        stderr = "\n".join(line for line in proc.stderr.splitlines() if "found symbolic link" not in line)
        raise RenderError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr.strip()}")
    return proc.stdout


def helm_version(root: Path | None = None) -> str:
    """The Helm client version (``v3.x.y``); Helm 4 is refused."""
    root = root or find_repo_root()
    out = _run([str(find_tool("helm", root)), "version", "--template", "{{ .Version }}"], root).strip()
    if not out.startswith("v3."):
        raise RenderError(f"Helm 3 is required, found {out}; run `make tools`")
    return out


def parse_documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize_build(path: Path, root: Path | None = None) -> str:
    """``kubectl kustomize --enable-helm --load-restrictor LoadRestrictionsNone <path>`` as text."""
    root = root or find_repo_root()
    helm_version(root)
    cmd = [
        str(find_tool("kubectl", root)),
        "kustomize",
        *KUSTOMIZE_FLAGS,
        "--helm-command",
        str(find_tool("helm", root)),
        str(path),
    ]
    return _run(cmd, root)


def overlay_dir(env: str, root: Path | None = None) -> Path:
    """``kubernetes/overlays/<env>``; an unknown environment is an error naming the known ones."""
    root = root or find_repo_root()
    path = root / "kubernetes" / "overlays" / env
    if not (path / "kustomization.yaml").is_file():
        known = sorted(p.name for p in (root / "kubernetes" / "overlays").iterdir() if p.is_dir())
        raise RenderError(f"unknown environment {env!r}; overlays: {', '.join(known)}")
    return path


def render_overlay(env: str, root: Path | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the ``env`` overlay renders (base + the four inflated charts)."""
    root = root or find_repo_root()
    return parse_documents(kustomize_build(overlay_dir(env, root), root))


def helm_template(
    chart: str,
    values_files: Iterable[Path] = (),
    *,
    release: str | None = None,
    namespace: str = "mlplatform",
    root: Path | None = None,
) -> list[dict[str, Any]]:
    """``helm template`` of a chart under ``charts/`` with the given values files, as objects."""
    root = root or find_repo_root()
    helm_version(root)
    cmd = [
        str(find_tool("helm", root)),
        "template",
        release or chart,
        str(root / "charts" / chart),
        "--namespace",
        namespace,
    ]
    for values in values_files:
        cmd += ["--values", str(values)]
    return parse_documents(_run(cmd, root))


def helm_lint(chart: str, values_files: Iterable[Path] = (), root: Path | None = None) -> str:
    """``helm lint --strict`` of a chart; raises :class:`RenderError` on any finding that fails it."""
    root = root or find_repo_root()
    cmd = [str(find_tool("helm", root)), "lint", "--strict", str(root / "charts" / chart)]
    for values in values_files:
        cmd += ["--values", str(values)]
    return _run(cmd, root)


def object_filename(obj: dict[str, Any]) -> str:
    """``<kind>-<name>.yaml`` in lower case (namespaced objects share one folder per overlay)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", str(obj["metadata"]["name"]).lower())
    return f"{obj['kind'].lower()}-{name}.yaml"


def write_rendered(objects: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write one file per object plus ``all.yaml`` into ``out_dir`` (emptied first)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    written: list[Path] = []
    for obj in objects:
        path = out_dir / object_filename(obj)
        if path.exists():
            raise RenderError(f"two objects map to {path.name}; names must be unique per kind")
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        written.append(path)
    all_path = out_dir / "all.yaml"
    all_path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return [*written, all_path]


@dataclass(frozen=True)
class ChartFileDrift:
    """A chart's rule-file copy that is missing, extra or different, or a rule file no chart ships."""

    chart: str
    path: str
    problem: str

    def __str__(self) -> str:
        if self.chart == "-":
            return f"{self.path}: {self.problem}"
        return f"charts/{self.chart}/files/rules/{self.path}: {self.problem}"


def observability_rule_files(root: Path | None = None) -> dict[str, Path]:
    """Prometheus rule files under ``observability/`` by file name (names must be unique)."""
    root = root or find_repo_root()
    found: dict[str, Path] = {}
    for pattern in RULE_SOURCE_GLOBS:
        for path in sorted((root / "observability").glob(pattern)):
            if path.name in found:
                raise RenderError(f"two rule files named {path.name}: {found[path.name]} and {path}")
            found[path.name] = path
    return found


def chart_rule_files(chart: str, root: Path | None = None) -> list[str]:
    """The rule files a chart ships: its values.yaml ``prometheusRule.files``."""
    root = root or find_repo_root()
    values = yaml.safe_load((root / "charts" / chart / "values.yaml").read_text()) or {}
    return list((values.get("prometheusRule") or {}).get("files") or [])


def check_chart_files(root: Path | None = None) -> list[ChartFileDrift]:
    """Differences between the rule files under ``observability/`` and the charts' ``files/rules/`` copies.

    Every rule file is shipped by exactly one chart (listed in its ``prometheusRule.files``), as a
    byte-identical copy; a chart holds no other copies.
    """
    root = root or find_repo_root()
    sources = observability_rule_files(root)
    drift: list[ChartFileDrift] = []
    shipped: dict[str, list[str]] = {}
    for chart in SERVICE_CHARTS:
        rules_dir = root / "charts" / chart / "files" / "rules"
        copies = {p.name: p for p in rules_dir.glob("*.yaml")} if rules_dir.is_dir() else {}
        listed = chart_rule_files(chart, root)
        for name in listed:
            shipped.setdefault(name, []).append(chart)
            src = sources.get(name)
            if src is None:
                drift.append(
                    ChartFileDrift(chart, name, "listed in prometheusRule.files but not under observability/")
                )
            elif name not in copies:
                drift.append(ChartFileDrift(chart, name, f"missing copy of {src.relative_to(root)}"))
            elif not filecmp.cmp(src, copies[name], shallow=False):
                drift.append(ChartFileDrift(chart, name, f"differs from {src.relative_to(root)}"))
        for name in sorted(set(copies) - set(listed)):
            drift.append(ChartFileDrift(chart, name, "not listed in prometheusRule.files"))
    for name, src in sources.items():
        charts = shipped.get(name, [])
        if not charts:
            drift.append(
                ChartFileDrift(
                    "-",
                    str(src.relative_to(root)),
                    "shipped by no chart: list it in one chart's prometheusRule.files",
                )
            )
        elif len(charts) > 1:
            drift.append(
                ChartFileDrift(
                    "-", str(src.relative_to(root)), f"listed by several charts: {', '.join(charts)}"
                )
            )
    return drift


def sync_chart_files(root: Path | None = None) -> list[Path]:
    """Copy each chart's listed rule files from ``observability/`` into ``files/rules/`` (drop stale copies)."""
    root = root or find_repo_root()
    sources = observability_rule_files(root)
    written: list[Path] = []
    for chart in SERVICE_CHARTS:
        rules_dir = root / "charts" / chart / "files" / "rules"
        rules_dir.mkdir(parents=True, exist_ok=True)
        listed = [name for name in chart_rule_files(chart, root) if name in sources]
        for stale in rules_dir.glob("*.yaml"):
            if stale.name not in listed:
                stale.unlink()
        for name in listed:
            src, dest = sources[name], rules_dir / name
            if not dest.exists() or not filecmp.cmp(src, dest, shallow=False):
                shutil.copyfile(src, dest)
                written.append(dest)
    return written


CHART_DIGESTS_FILE = Path("charts") / "chart-digests.json"


def chart_digest(chart: str, root: Path | None = None) -> str:
    """sha256 over a chart's files (paths and bytes); a service chart includes the library chart."""
    import hashlib

    root = root or find_repo_root()
    digest = hashlib.sha256()
    chart_dir = root / "charts" / chart
    for path in sorted(p for p in chart_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        rel = path.relative_to(chart_dir)
        if rel.parts[0] == "charts":
            continue  # the library chart symlink, hashed below
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    if chart != LIBRARY_CHART:
        digest.update(chart_digest(LIBRARY_CHART, root).encode())
    return digest.hexdigest()


def chart_version(chart: str, root: Path | None = None) -> str:
    root = root or find_repo_root()
    return str(yaml.safe_load((root / "charts" / chart / "Chart.yaml").read_text())["version"])


def current_chart_digests(root: Path | None = None) -> dict[str, dict[str, str]]:
    root = root or find_repo_root()
    return {
        chart: {"version": chart_version(chart, root), "sha256": chart_digest(chart, root)}
        for chart in (LIBRARY_CHART, *SERVICE_CHARTS)
    }


def record_chart_digests(root: Path | None = None) -> dict[str, dict[str, str]]:
    """Record each chart's version and content digest; refuse a changed chart whose version was not bumped."""
    import json

    root = root or find_repo_root()
    path = root / CHART_DIGESTS_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    current = current_chart_digests(root)
    stale = [
        chart
        for chart, now in current.items()
        if chart in recorded
        and recorded[chart]["sha256"] != now["sha256"]
        and recorded[chart]["version"] == now["version"]
    ]
    if stale:
        raise RenderError(
            f"chart(s) {', '.join(stale)} changed without a version bump: bump `version` in their Chart.yaml "
            "(and the mlplatform-lib dependency version of the service charts when the library changed)"
        )
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current
