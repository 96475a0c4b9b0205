"""``mlplatform promote``: change a model-version or image pin in an environment overlay.

The pins live in ``kubernetes/overlays/<env>/values/``: model versions in ``common.yaml``
(``models:``; model-serving and explainability read the same pins) or, for a model served by a
release of its own, in that release's file (``model-serving-text.yaml``: the summarizer), the image tag of the whole
image family in ``common.yaml`` (``image.tag``), image digests per service in ``<service>.yaml``
(``image.digest``, ``gpu.image.digest``). The file is edited line by line, so comments and
layout stay and a promotion is a one-line diff per pin; the result is re-parsed to check it.
Argo CD then syncs the commit.

A digest names the image of one tag: a new ``--image-tag`` clears every digest the same call does
not renew (CPU and GPU), so a new tag is never pulled by an old digest; an exact tag without a
digest is a valid pin. The release pipeline (``.github/workflows/release.yaml``) passes the
digest of every image it built.

    mlplatform promote --model fraud-detector --version 7 --env prod
    mlplatform promote --image-tag 0.2.0 --env prod --image-digest model-serving=sha256:... ...
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import yaml

SERVICES: tuple[str, ...] = ("model-serving", "feature-store", "drift-detection", "explainability")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:][^:#]*?)\s*:(?P<rest>.*)$")


class PromoteError(ValueError):
    """The promotion was refused: the message names the option or file and what is wrong."""


@dataclass(frozen=True)
class Change:
    """One edited file: its path and the unified diff of the edit."""

    path: Path
    before: str
    after: str

    @property
    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=f"a/{self.path}",
                tofile=f"b/{self.path}",
            )
        )


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#") and stripped != "---"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _yaml_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_scalar(text: str, keys: Sequence[str], value: str) -> str:
    """Set ``keys`` (a path of block-mapping keys) to the string ``value`` in YAML ``text``.

    An existing line is rewritten in place (one-line change, trailing comment kept); a missing
    last key is added at the end of its parent block; missing parents are created. Flow-style
    parents (``image: {tag: x}``) are refused rather than rewritten.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start, end, parent_indent = 0, len(lines), -1
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        child_indent = next(
            (_indent(lines[i]) for i in range(start, end) if _is_content(lines[i])),
            parent_indent + 2 if parent_indent >= 0 else 0,
        )
        found = None
        for i in range(start, end):
            match = _KEY_LINE.match(lines[i].rstrip("\n"))
            if match and _indent(lines[i]) == child_indent and match["key"].strip("'\"") == key:
                found = (i, match)
                break
        if found is None:
            insert_at = end
            while insert_at > start and not _is_content(lines[insert_at - 1]):
                insert_at -= 1
            pad = " " * child_indent
            new = [f"{pad}{key}: {_yaml_quote(value)}\n"] if last else [f"{pad}{key}:\n"]
            if not last:
                for extra, sub in enumerate(keys[depth + 1 :], start=1):
                    sub_pad = " " * (child_indent + 2 * extra)
                    tail = f" {_yaml_quote(value)}" if extra == len(keys) - depth - 1 else ""
                    new.append(f"{sub_pad}{sub}:{tail}\n")
            lines[insert_at:insert_at] = new
            return "".join(lines)
        i, match = found
        rest = match["rest"]
        if last:
            tail = re.match(r"\s*(\"[^\"]*\"|'[^']*'|[^#]*?)(\s+#.*)?$", rest)
            comment = (tail.group(2) or "") if tail else ""
            lines[i] = f"{match['indent']}{match['key']}: {_yaml_quote(value)}{comment}\n"
            return "".join(lines)
        if rest.strip() and not rest.strip().startswith("#"):
            raise PromoteError(f"key {'.'.join(keys[: depth + 1])} is not a block mapping; edit it by hand")
        block_end = i + 1
        while block_end < end and (
            not _is_content(lines[block_end]) or _indent(lines[block_end]) > child_indent
        ):
            block_end += 1
        start, end, parent_indent = i + 1, block_end, child_indent
    raise PromoteError("empty key path")


def _get(data: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def edit_pin(path: Path, keys: Sequence[str], value: str) -> Change:
    """The change that sets ``keys`` to ``value`` in ``path`` (not yet written), checked by re-parsing."""
    if not path.is_file():
        raise PromoteError(f"{path} does not exist")
    before = path.read_text()
    try:
        expected = yaml.safe_load(before) or {}
    except yaml.YAMLError as exc:
        raise PromoteError(f"{path} is not valid YAML: {exc}") from exc
    after = set_scalar(before, keys, value)
    parsed = yaml.safe_load(after) or {}
    if str(_get(parsed, keys)) != value:
        raise PromoteError(f"editing {'.'.join(keys)} in {path} did not give {value!r}; edit it by hand")
    # Nothing but the pin may change.
    node = expected
    for key in keys[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        node[keys[-1]] = value
    if parsed != expected:
        raise PromoteError(f"editing {'.'.join(keys)} in {path} changed other keys; edit it by hand")
    return Change(path=path, before=before, after=after)


def _values_dir(root: Path, env: str) -> Path:
    overlays = root / "kubernetes" / "overlays"
    path = overlays / env / "values"
    if not path.is_dir():
        known = (
            sorted(p.name for p in overlays.iterdir() if (p / "values").is_dir()) if overlays.is_dir() else []
        )
        raise PromoteError(f"--env: unknown environment {env!r}; overlays: {', '.join(known) or 'none'}")
    return path


def _model_pin_file(values: Path, model: str) -> Path:
    """The values file that pins ``model``: a release of its own (e.g. ``model-serving-text.yaml``,
    the summarizer) pins it in its file; the models every release shares are in ``common.yaml``."""
    own = []
    for path in sorted(values.glob("*.yaml")):
        if path.name == "common.yaml":
            continue
        try:
            pins = (yaml.safe_load(path.read_text()) or {}).get("models") or {}
        except yaml.YAMLError as exc:
            raise PromoteError(f"{path} is not valid YAML: {exc}") from exc
        if isinstance(pins, dict) and pins.get(model) is not None:
            own.append(path)
    if len(own) > 1:
        raise PromoteError(
            f"--model: {model} is pinned in {len(own)} files ({', '.join(p.name for p in own)})"
        )
    return own[0] if own else values / "common.yaml"


def _parse_digests(items: Sequence[str], option: str) -> dict[str, str]:
    digests: dict[str, str] = {}
    for item in items:
        service, sep, digest = item.partition("=")
        if not sep or service not in SERVICES:
            raise PromoteError(
                f"{option}: {item!r} must be SERVICE=sha256:<64 hex>, SERVICE one of {', '.join(SERVICES)}"
            )
        if not DIGEST_RE.match(digest):
            raise PromoteError(
                f"{option}: digest of {service} must be sha256:<64 lowercase hex>, got {digest!r}"
            )
        digests[service] = digest
    return digests


def plan_promotion(
    root: Path,
    env: str,
    *,
    model: str | None = None,
    version: int | None = None,
    image_tag: str | None = None,
    image_digests: Sequence[str] = (),
    gpu_image_digests: Sequence[str] = (),
) -> list[Change]:
    """The file changes a promotion makes (nothing is written). Raises :class:`PromoteError`."""
    values = _values_dir(root, env)
    changes: list[Change] = []
    if (model is None) != (version is None):
        raise PromoteError("--model and --version go together")
    if model is None and image_tag is None and not image_digests and not gpu_image_digests:
        raise PromoteError("nothing to promote: give --model/--version, --image-tag or --image-digest")
    if model is not None and version is not None:
        if not MODEL_NAME_RE.match(model):
            raise PromoteError(f"--model: {model!r} is not a registered-model name")
        if version < 1:
            raise PromoteError(f"--version: must be a registry version number >= 1, got {version}")
        changes.append(edit_pin(_model_pin_file(values, model), ["models", model], str(version)))
    digests = _parse_digests(image_digests, "--image-digest")
    gpu_digests = _parse_digests(gpu_image_digests, "--gpu-image-digest")
    if image_tag is not None:
        if not IMAGE_TAG_RE.match(image_tag) or image_tag.lower() == "latest":
            raise PromoteError(f"--image-tag: {image_tag!r} is not an exact image tag (and never 'latest')")
        if env == "prod":
            missing = [s for s in SERVICES if s not in digests]
            if missing:
                raise PromoteError(
                    "--image-tag in prod needs the new digests too: --image-digest SERVICE=sha256:... "
                    f"for {', '.join(missing)}"
                )
        changes.append(_merge(changes, values / "common.yaml", ["image", "tag"], image_tag))
    for service, digest in digests.items():
        changes.append(_merge(changes, values / f"{service}.yaml", ["image", "digest"], digest))
    for service, digest in gpu_digests.items():
        changes.append(_merge(changes, values / f"{service}.yaml", ["gpu", "image", "digest"], digest))
    if image_tag is not None and _current(values / "common.yaml", ["image", "tag"]) != image_tag:
        # The old digests belong to the old tag: clear those this promotion does not renew.
        for service in SERVICES:
            path = values / f"{service}.yaml"
            if service not in digests and _current(path, ["image", "digest"]):
                changes.append(_merge(changes, path, ["image", "digest"], ""))
            if service not in gpu_digests and _current(path, ["gpu", "image", "digest"]):
                changes.append(_merge(changes, path, ["gpu", "image", "digest"], ""))
    # Collapse several edits of one file into a single change.
    merged: dict[Path, Change] = {}
    for change in changes:
        first = merged.get(change.path)
        merged[change.path] = Change(change.path, first.before if first else change.before, change.after)
    return [c for c in merged.values() if c.before != c.after]


def _current(path: Path, keys: Sequence[str]) -> str:
    """The pin at ``keys`` in ``path`` as committed ("" when the file or key is absent)."""
    if not path.is_file():
        return ""
    value = _get(yaml.safe_load(path.read_text()) or {}, keys)
    return "" if value is None else str(value)


def _merge(previous: list[Change], path: Path, keys: Sequence[str], value: str) -> Change:
    """Edit ``path`` on top of any earlier change of the same file in this promotion."""
    earlier = [c for c in previous if c.path == path]
    if not earlier:
        return edit_pin(path, keys, value)
    tmp_text = earlier[-1].after
    after = set_scalar(tmp_text, keys, value)
    if str(_get(yaml.safe_load(after) or {}, keys)) != value:
        raise PromoteError(f"editing {'.'.join(keys)} in {path} did not give {value!r}; edit it by hand")
    return Change(path=path, before=tmp_text, after=after)


def apply_changes(changes: Sequence[Change]) -> None:
    """Write the planned changes."""
    for change in changes:
        tmp = change.path.with_suffix(change.path.suffix + ".tmp")
        tmp.write_text(change.after)
        tmp.replace(change.path)


def promote(
    env: str = typer.Option(..., "--env", help="Environment overlay to edit (dev, staging, prod)."),
    model: str | None = typer.Option(None, "--model", help="Registered model name, e.g. fraud-detector."),
    version: int | None = typer.Option(None, "--version", help="Registry version to pin (with --model)."),
    image_tag: str | None = typer.Option(None, "--image-tag", help="Exact image tag for all services."),
    image_digest: list[str] = typer.Option(
        [],
        "--image-digest",
        help="SERVICE=sha256:... image digest (repeatable; required in prod with --image-tag).",
    ),
    gpu_image_digest: list[str] = typer.Option(
        [], "--gpu-image-digest", help="SERVICE=sha256:... digest of the GPU image variant (repeatable)."
    ),
    root: Path | None = typer.Option(None, "--root", help="Repository root (default: found from the cwd)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the diff without writing."),
) -> None:
    """Pin a model version or an image tag in an environment overlay (commit the one-line diff)."""
    from mlplatform.deploy.render import RenderError, find_repo_root

    try:
        repo = root or find_repo_root()
        changes = plan_promotion(
            repo,
            env,
            model=model,
            version=version,
            image_tag=image_tag,
            image_digests=image_digest,
            gpu_image_digests=gpu_image_digest,
        )
    except (PromoteError, RenderError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not changes:
        typer.echo("already pinned; nothing changed")
        return
    for change in changes:
        rel = Change(change.path.relative_to(repo), change.before, change.after)
        typer.echo(rel.diff, nl=False)
    if not dry_run:
        apply_changes(changes)
