#!/usr/bin/env python3
"""Generate the service charts' values.yaml and values.schema.json from charts/values-source/.

python scripts/chart_values.py            # write charts/<chart>/values.yaml and values.schema.json
python scripts/chart_values.py --check    # exit 1 when a committed file is not what the source generates

`make chart-values` runs the first. After a change that alters a chart's generated files, bump that
chart's version (Chart.yaml and the overlays) and run `make chart-digests`, as for any chart change.
"""

from __future__ import annotations

import argparse
import sys

import jinja2
import yaml
from stale_files import report_stale  # scripts/stale_files.py, beside this script

from mlplatform.deploy.chart_values import check, write
from mlplatform.deploy.render import find_repo_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail when a generated file is not current")
    args = parser.parse_args(argv)
    root = find_repo_root()
    try:
        if args.check:
            return 1 if report_stale(check(root), "chart-values") else 0
        for path in write(root):
            print(f"updated {path}")
    except (ValueError, OSError, jinja2.TemplateError, yaml.YAMLError) as exc:  # a broken source
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
