"""What an image installs: the closure of the project's requirements (base plus one extra) over the
distributions installed here (the project venv holds the locked versions), and its size on disk."""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed() -> dict[str, md.Distribution]:
    return {norm(d.metadata["Name"]): d for d in md.distributions()}


def project_requirements(extra: str | None) -> list[str]:
    """pyproject's base dependencies plus those of ``extra``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(project["optional-dependencies"][extra] if extra else [])]


def closure(requirements: list[str]) -> set[str]:
    """Normalised names of every distribution ``requirements`` pull in (markers and extras honoured)."""
    dists = _installed()
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [(Requirement(r), frozenset()) for r in requirements]
    while stack:
        req, parent_extras = stack.pop()
        if req.marker is not None:
            envs = [{"extra": e} for e in parent_extras] or [{"extra": ""}]
            if not any(req.marker.evaluate(env) for env in envs):
                continue
        name = norm(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = dists.get(name)
        if dist is None:
            raise LookupError(f"{req} is required but not installed here")
        stack += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    return {name for name, _ in seen}


def installed_bytes(names: set[str]) -> int:
    """Bytes on disk of these distributions' files (their RECORD)."""
    dists = _installed()
    total = 0
    for name in names:
        for f in dists[name].files or []:
            try:
                total += f.locate().stat().st_size
            except OSError:
                pass
    return total


def module_distributions() -> dict[str, set[str]]:
    """Top-level import name -> normalised distribution names providing it."""
    return {mod: {norm(d) for d in ds} for mod, ds in md.packages_distributions().items()}


def site_view(names: set[str], dest: Path) -> Path:
    """A site-packages folder holding only these distributions (symlinks to their top-level files and
    folders, from each RECORD), so ``python -S`` with it on PYTHONPATH sees what an image installing
    just them would: other distributions are absent, optional imports of them fall back. Namespace
    folders shared by several distributions (google/, opentelemetry/) come in whole."""
    dists = _installed()
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        dist = dists[name]
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "") or top.endswith(".pth") or top == "__pycache__":
                continue
            link = dest / top
            if not link.exists():
                link.symlink_to(Path(dist.locate_file(top)))
    return dest
