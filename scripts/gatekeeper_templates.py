#!/usr/bin/env python3
"""Generate the Rego of each Gatekeeper ConstraintTemplate from its policy's src.rego.

python scripts/gatekeeper_templates.py           # rewrite policies/<policy>/template.yaml where stale
python scripts/gatekeeper_templates.py --check   # exit 1, naming them, when a template is stale

`make policy-templates` runs the first; tests/policies/test_policies.py runs --check. A template
keeps what is written above its ``    rego: |`` line (metadata, the parameters' schema: edit those
in template.yaml); the block below it is src.rego, indented (edit src.rego, then regenerate).
Standard library only, so it runs before the virtual environment exists.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REGO_LINE = "    rego: |\n"
INDENT = "      "


def policy_dirs(root: Path) -> list[Path]:
    """The policies under ``root/policies``: folders with a ``src.rego``."""
    return sorted(p for p in (root / "policies").iterdir() if (p / "src.rego").is_file())


def render(policy: Path) -> str:
    """``policy/template.yaml`` with the block under its ``rego: |`` line replaced by src.rego."""
    text = (policy / "template.yaml").read_text()
    head, sep, _ = text.partition(REGO_LINE)
    if not sep:
        raise ValueError(f"{policy / 'template.yaml'}: no '{REGO_LINE.strip()}' line to put src.rego under")
    src = (policy / "src.rego").read_text()
    return head + sep + "".join((INDENT + line) if line.strip() else "\n" for line in src.splitlines(True))


def stale(root: Path) -> list[Path]:
    """The template.yaml files that are not what their src.rego generates."""
    return [p / "template.yaml" for p in policy_dirs(root) if (p / "template.yaml").read_text() != render(p)]


def write(root: Path) -> list[Path]:
    """Regenerate the stale templates; return them."""
    changed = stale(root)
    for target in changed:
        target.write_text(render(target.parent))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="fail when a template is not what src.rego generates"
    )
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1], help="repository root"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            paths = stale(args.root)
            for path in paths:
                print(f"{path.relative_to(args.root)}: not what its src.rego generates", file=sys.stderr)
            if paths:
                print("run: make policy-templates", file=sys.stderr)
            return 1 if paths else 0
        for path in write(args.root):
            print(f"updated {path.relative_to(args.root)}")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
