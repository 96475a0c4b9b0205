"""Alert routing: the shipped Alertmanager configuration (observability/alertmanager/alertmanager.yaml).

* ``amtool check-config`` accepts it; ``amtool config routes test`` shows each alert reaching its
  team's receiver by severity.
* Live: a real drift-detection process, a real Prometheus (Debian's 2.42) scraping it with the
  shipped rule files, a real Alertmanager (Debian's ``prometheus-alertmanager``) with the shipped
  configuration, and a webhook receiver in the test. drift-detection is stopped: MlplatformTargetDown
  fires and is delivered to ``monitoring-page``; drift-detection starts again: the alert resolves and
  the resolution is delivered. Two changes make this take seconds, not minutes: every rule's ``for:``
  is 1s and Alertmanager's group_wait/group_interval are 1s (in copies; the shipped files are
  unchanged), and every webhook URL points at the test's receiver, keeping its path (the receiver).
* Inhibition, on the real Alertmanager: with drift-detection down, serving's payload-delivery alert
  is inhibited and only the cause is delivered.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import stop_process, wait_until_sync
from tests.observability.promql import OBS, load_module, rule_files
from tests.procs import ServiceProcess, free_port, start_service, wait_ready

pytestmark = pytest.mark.integration

CONFIG = OBS / "alertmanager" / "alertmanager.yaml"
ALERTMANAGER = "prometheus-alertmanager"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("amtool") is None:
        pytest.fail("amtool is missing: install Debian's prometheus-alertmanager (make sysdeps)")
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)


def test_amtool_accepts_the_shipped_config():
    proc = amtool("check-config", str(CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and "4 inhibit rules" in proc.stdout


def test_amtool_rejects_a_broken_config(tmp_path):
    broken = yaml.safe_load(CONFIG.read_text())
    broken["route"]["receiver"] = "no-such-receiver"
    path = tmp_path / "am.yaml"
    path.write_text(yaml.safe_dump(broken))
    proc = amtool("check-config", str(path))
    assert proc.returncode != 0 and "no-such-receiver" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            {"alertname": "MlplatformTargetDown", "severity": "critical", "job": "drift-detection"},
            "monitoring-page",
        ),
        (
            {"alertname": "MlplatformTargetDown", "severity": "critical", "job": "feature-store"},
            "features-page",
        ),
        (
            {"alertname": "MlplatformTargetDown", "severity": "critical", "job": "model-serving"},
            "serving-page",
        ),
        (
            {"alertname": "MlplatformTargetDown", "severity": "critical", "job": "node-exporter"},
            "platform-page",
        ),
        ({"alertname": "DatasetDriftDetected", "severity": "warning"}, "monitoring-chat"),
        ({"alertname": "SegmentDisparateImpact", "severity": "info"}, "monitoring-ticket"),
        ({"alertname": "FeatureDriftSustained", "severity": "warning"}, "monitoring-chat"),  # not features
        ({"alertname": "FeatureFreshnessStale", "severity": "warning"}, "features-chat"),
        ({"alertname": "ServingAvailabilityBudgetBurn", "severity": "critical"}, "serving-page"),
        ({"alertname": "ServingAvailabilityBudgetBurn", "severity": "warning"}, "serving-chat"),
        ({"alertname": "PayloadRecordsUndelivered", "severity": "warning"}, "serving-chat"),
        ({"alertname": "HpaAtMaxReplicas", "severity": "warning"}, "platform-chat"),
    ],
)
def test_routes_by_team_and_severity(labels, receiver):
    proc = amtool(
        "config", "routes", "test", f"--config.file={CONFIG}", *(f"{k}={v}" for k, v in labels.items())
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == receiver


def test_every_alert_has_a_severity_the_routes_know():
    known = {"critical", "warning", "info"}
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule.get("labels", {}).get("severity") in known, (path.name, rule["alert"])


# -- live: Prometheus -> Alertmanager -> webhook ------------------------------------------------


class WebhookReceiver:
    """Collects Alertmanager's webhook notifications (version 4 payload) by URL path."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with receiver._lock:
                    receiver.notifications.append((self.path.strip("/"), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def wait(self, predicate, deadline_s: float) -> tuple[str, dict[str, Any]]:  # noqa: ANN001
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            with self._lock:
                for path, body in self.notifications:
                    if predicate(path, body):
                        return path, body
            time.sleep(0.1)
        raise TimeoutError(f"no such notification in {deadline_s}s; got {self.notifications}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_config_copy(tmp_path: Path, webhook_url: str) -> Path:
    """The shipped config with 1 s grouping timers and every webhook URL pointing at ``webhook_url``."""
    config = yaml.safe_load(CONFIG.read_text())
    config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = re.sub(r"^https?://[^/]+", webhook_url, hook["url"])
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


test_config_copy.__test__ = False  # a helper, not a test


class Process:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        stop_process(self.proc)

    def wait_ready(self, url: str, deadline_s: float = 60) -> None:
        wait_ready(url, deadline_s, self.proc, path="/-/ready", log=self.log)


def start_drift(port: int, log_dir: Path) -> ServiceProcess:
    """A drift-detection process on ``port`` (same data directory each time), once it is ready."""
    env = {"MLPLATFORM_DATA_DIR": str(log_dir / "data"), "DRIFT_RETRAIN_MODE": "off"}
    return start_service("drift-detection", env, log_dir, port=port)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A webhook receiver and Alertmanager with the shipped config (fast timers, URLs to the receiver)."""
    if shutil.which(ALERTMANAGER) is None:
        pytest.fail("prometheus-alertmanager is missing: make sysdeps")
    hook = WebhookReceiver()
    am_port = free_port()
    am = Process(
        [
            ALERTMANAGER,
            f"--config.file={test_config_copy(tmp_path, hook.url)}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
    )
    try:
        url = f"http://127.0.0.1:{am_port}"
        am.wait_ready(url)
        yield {"hook": hook, "am": url, "am_port": am_port}
    finally:
        am.stop()
        hook.close()


@pytest.fixture
def alerting(alertmanager: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Prometheus (shipped rules with 1 s ``for:``) alerting to ``alertmanager``, scraping a
    drift-detection process."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is missing: make sysdeps")
    state: dict[str, Any] = dict(alertmanager)
    prom: Process | None = None
    try:
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir()
        for path in rule_files():
            text = re.sub(r"(?m)^(\s+for:\s*)\S+", r"\g<1>1s", path.read_text())
            (rules_dir / path.name).write_text(text)
        drift_port = free_port()
        state["drift_port"] = drift_port
        state["drift"] = start_drift(drift_port, tmp_path)
        gen = load_module(OBS / "prometheus" / "scrape_config.py", "obs_scrape_config")
        config = gen.render(
            gen.load_targets(),
            interval="1s",
            addresses={"drift-detection": f"127.0.0.1:{drift_port}"},
            rule_files=[str(p) for p in sorted(rules_dir.glob("*.yaml"))],
        )
        config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] == "drift-detection"]
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{state['am_port']}"]}]}]
        }
        prom_config = tmp_path / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump(config, sort_keys=False))
        prom_port = free_port()
        prom = Process(
            [
                "prometheus",
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            tmp_path / "prometheus.log",
        )
        state["prom"] = f"http://127.0.0.1:{prom_port}"
        prom.wait_ready(state["prom"])
        yield state
    finally:
        if "drift" in state:
            state["drift"].stop()
        if prom is not None:
            prom.stop()


def _up(prom: str) -> list[str]:
    body = httpx.get(f"{prom}/api/v1/query", params={"query": 'up{job="drift-detection"}'}, timeout=5).json()
    return [s["value"][1] for s in body["data"]["result"]]


def _wait_up(prom: str, value: str, deadline_s: float = 60) -> None:
    wait_until_sync(lambda: _up(prom) == [value], deadline_s, f"up == {value}", step_s=0.2)


def test_target_down_alert_travels_to_the_webhook_and_resolves(alerting):
    hook, prom = alerting["hook"], alerting["prom"]
    _wait_up(prom, "1")
    assert hook.notifications == []  # nothing fires while the service is up

    alerting["drift"].stop()  # the fault
    stopped = time.monotonic()

    def firing(path: str, body: dict[str, Any]) -> bool:
        return body["status"] == "firing" and body["commonLabels"].get("alertname") == "MlplatformTargetDown"

    path, body = hook.wait(firing, 90)
    fired_after = time.monotonic() - stopped
    assert path == "monitoring-page"  # critical alert of a drift-detection target
    assert body["version"] == "4" and body["receiver"] == "monitoring-page"
    alert = body["alerts"][0]
    assert alert["labels"]["job"] == "drift-detection" and alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"].endswith("MlplatformTargetDown.md")
    assert "is down" in alert["annotations"]["summary"]

    alerting["drift"] = start_drift(alerting["drift_port"], alerting["drift"].log_path.parent)  # repaired

    def resolved(path: str, body: dict[str, Any]) -> bool:
        return (
            body["status"] == "resolved" and body["commonLabels"].get("alertname") == "MlplatformTargetDown"
        )

    path, body = hook.wait(resolved, 120)
    assert path == "monitoring-page" and body["alerts"][0]["endsAt"] > body["alerts"][0]["startsAt"]
    print(f"MlplatformTargetDown delivered {fired_after:.1f}s after drift-detection stopped")


def test_cause_inhibits_symptom_on_the_real_alertmanager(alertmanager):
    """Alerts posted the way Prometheus posts them (API v2): the payload-delivery symptom is held back
    while drift-detection's target-down alert is active in the same namespace."""
    hook, am = alertmanager["hook"], alertmanager["am"]
    now = datetime.now(UTC)
    window = {"startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat()}
    cause = {
        "alertname": "MlplatformTargetDown",
        "severity": "critical",
        "job": "drift-detection",
        "namespace": "mlplatform-prod",
    }
    symptom = {
        "alertname": "PayloadRecordsUndelivered",
        "severity": "warning",
        "job": "model-serving",
        "namespace": "mlplatform-prod",
    }
    other_ns = {**symptom, "namespace": "mlplatform-staging"}
    r = httpx.post(
        f"{am}/api/v2/alerts", json=[{"labels": lb, **window} for lb in (cause, symptom, other_ns)], timeout=5
    )
    assert r.status_code == 200
    hook.wait(
        lambda p, b: b["commonLabels"].get("namespace") == "mlplatform-prod" and p == "monitoring-page", 30
    )
    hook.wait(
        lambda p, b: b["commonLabels"].get("namespace") == "mlplatform-staging" and p == "serving-chat", 30
    )
    time.sleep(3)  # three more group intervals: the inhibited one must still not be delivered
    delivered = {
        (p, b["commonLabels"].get("alertname"), b["commonLabels"].get("namespace"))
        for p, b in hook.notifications
    }
    assert ("serving-chat", "PayloadRecordsUndelivered", "mlplatform-prod") not in delivered
    alerts = httpx.get(f"{am}/api/v2/alerts", timeout=5).json()
    state = {(a["labels"]["alertname"], a["labels"]["namespace"]): a["status"] for a in alerts}
    assert state[("PayloadRecordsUndelivered", "mlplatform-prod")]["state"] == "suppressed"
    assert state[("PayloadRecordsUndelivered", "mlplatform-prod")]["inhibitedBy"]
    assert state[("PayloadRecordsUndelivered", "mlplatform-staging")]["state"] == "active"


def test_kustomization_ships_the_config_as_the_alertmanager_secret():
    """observability/alertmanager renders the Secret kube-prometheus-stack reads; Argo CD syncs it
    (argo-cd/apps/application-alerting.yaml; tests/deploy/test_argocd.py builds every Application)."""
    import base64

    from mlplatform.deploy.render import kustomize_build, parse_documents

    root = OBS.parent
    (secret,) = parse_documents(kustomize_build(OBS / "alertmanager", root))
    assert (secret["kind"], secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        "Secret",
        "alertmanager-mlplatform",
        "monitoring",
    )
    assert base64.b64decode(secret["data"]["alertmanager.yaml"]).decode() == CONFIG.read_text()
