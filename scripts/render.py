#!/usr/bin/env python3
"""Render an environment's manifests: ``make render ENV=prod`` writes them to rendered/prod.

python scripts/render.py --env prod --out rendered/prod
python scripts/render.py --sync-chart-files     # copy observability rule files into the charts
python scripts/render.py --check-chart-files    # exit 1 when a chart copy drifted
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stale_files import report_stale  # scripts/stale_files.py, beside this script

from mlplatform.deploy.chart_values import check as check_chart_values
from mlplatform.deploy.render import (
    RenderError,
    check_chart_files,
    find_repo_root,
    record_chart_digests,
    render_overlay,
    sync_chart_files,
    write_rendered,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", help="overlay under kubernetes/overlays (dev, staging, prod)")
    parser.add_argument("--out", type=Path, help="output folder (default: rendered/<env>)")
    parser.add_argument("--sync-chart-files", action="store_true", help="copy rule files into the charts")
    parser.add_argument("--check-chart-files", action="store_true", help="fail when chart copies drifted")
    parser.add_argument(
        "--record-chart-digests", action="store_true", help="record chart versions and digests (after a bump)"
    )
    args = parser.parse_args(argv)
    root = find_repo_root()
    try:
        if args.sync_chart_files:
            for path in sync_chart_files(root):
                print(f"updated {path.relative_to(root)}")
        if args.record_chart_digests:
            for chart, entry in record_chart_digests(root).items():
                print(f"{chart} {entry['version']} {entry['sha256'][:12]}")
        if args.check_chart_files and report_stale(check_chart_files(root), "chart-files"):
            return 1
        if args.env:
            if report_stale(check_chart_files(root), "chart-files"):
                return 1
            if report_stale(check_chart_values(root), "chart-values"):
                return 1
            objects = render_overlay(args.env, root)
            out = args.out or root / "rendered" / args.env
            files = write_rendered(objects, out)
            print(f"rendered {len(objects)} objects of {args.env} into {out} ({len(files)} files)")
        elif not (args.sync_chart_files or args.check_chart_files or args.record_chart_digests):
            parser.error("give --env, --sync-chart-files, --check-chart-files or --record-chart-digests")
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
