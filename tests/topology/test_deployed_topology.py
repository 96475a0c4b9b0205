"""The platform in the shape the prod overlay deploys it, with replicas killed under load.

What runs, for real:
- 2 model-serving and 2 drift-detection processes (``mlplatform serve``), each configured with the
  container environment of the *rendered prod overlay* (ConfigMaps plus container ``env``), so a
  setting the chart names and the code does not know fails this test;
- HAProxy (Debian) in front of each pair: round robin, readiness health checks, connection retries
  with redispatch, as a Service with endpoints would;
- PostgreSQL (Debian) as drift-detection's shared database; MLflow on SQLite with the demo models
  (prod pins ``fraud-detector/1`` and ``fraud-detector-mlp/1``);
- tracing on (prod's OTLP endpoint points at an OTLP/HTTP receiver standing in for the collector),
  INFO access logs, payload logging, API keys on every hop.

Test doubles, for what cannot run here: the Kubernetes API server (``tests/kube_api.py``, RBAC from the
rendered Role and RoleBinding) and the OTLP collector (``tests/observability/otlp.py``).

Substitutions, each because the thing named cannot run here or is tested elsewhere: Vault → the env
secrets backend with the same secret names (Vault: ``tests/integration/security``); cluster DNS names →
the HAProxy/receiver/registry addresses on loopback; the pod's service-account token → a token the API
double maps to ``system:serviceaccount:mlplatform-prod:drift-detection``; the downward-API namespace →
the Deployment's namespace.

Under steady load (several client threads, 4 rows per request, data that drifts):
1. one model-serving process is killed with SIGKILL: a crashed container, restarted by the kubelet in
   the same pod, so on the same ``emptyDir`` (its payload write-ahead log replays what it had not sent);
2. one drift-detection process is killed with SIGKILL and replaced on an *empty* data directory
   (a rescheduled pod): its state is in PostgreSQL;
3. the other model-serving process gets SIGTERM (a deleted pod: it drains its payload queue and spool)
   and is replaced on an *empty* data directory.

Then: every accepted inference's rows are in drift's database exactly once (plus, at most, rows of
requests that were in flight on the killed serving process and never answered); every record is in at
most one window and the windows hold all but the last partial window; each window's statistics equal a
single-process recomputation over its records; one retraining Job was created for the one drift episode,
by the drift service account, allowed by the rendered RBAC; the only failed inference requests are ones
in flight on the killed serving process.
"""

from __future__ import annotations

import hashlib
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import random_v2_body
from tests.kube_api import KubeApiDouble
from tests.observability.otlp import OtlpReceiver
from tests.procs import ServiceProcess, free_port, start_service, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

MODEL = "fraud-detector"
ROWS = 4
CLIENTS = 6
# Steady load the 2-core test machine sustains end to end (6 x 40 requests/s x 4 rows = 960 rows/s
# into drift). Beyond it serving's payload queue overflows into the disk spool and drift catches up
# later: not what this test is about.
RATE_PER_CLIENT = 40.0
NAMESPACE = "mlplatform-prod"
DRIFT_SA_TOKEN = "token-of-" + secrets.token_hex(8)

# cluster addresses in the rendered prod overlay, and what stands in for them here
CLUSTER_ONLY = ("VAULT_ADDR", "VAULT_ROLE", "VAULT_AUTH_PATH", "VAULT_KV_MOUNT", "VAULT_SECRET_PATH")


def _check_known(env: dict[str, object], prefix: str, settings_cls: type) -> None:
    """Every ``<PREFIX>*`` variable the chart sets must be a setting of the service."""
    known = {f"{prefix}{name.upper()}" for name in settings_cls.model_fields}
    unknown = sorted(k for k in env if k.startswith(prefix) and k not in known)
    assert not unknown, f"the prod overlay sets {unknown}, which {settings_cls.__name__} does not read"


def _process_env(rendered: dict[str, object], overrides: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in rendered.items():
        if key in CLUSTER_ONLY:
            continue
        if isinstance(value, dict):
            assert key in overrides, f"{key} comes from {value}: the test must say what stands in for it"
            continue
        env[key] = str(value)
    env.update(overrides)
    return env


def _haproxy_config(serving: list[int], drift: list[int], fe_serving: int, fe_drift: int) -> str:
    def backend(name: str, ports: list[int]) -> str:
        servers = "\n".join(f"  server {name}{i} 127.0.0.1:{p} check" for i, p in enumerate(ports))
        return (
            f"backend {name}\n  balance roundrobin\n  option httpchk GET /v2/health/ready\n"
            f"  http-check expect status 200\n{servers}\n"
        )

    return (
        "global\n  maxconn 2000\n"
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n"
        # a new server connection per request (as kube-proxy opens one per client connection): a request
        # routed to a dead replica fails to connect and is redispatched, never sent into a dead socket
        "  option redispatch\n  option http-server-close\n  retries 3\n"
        "  default-server inter 250ms fall 1 rise 2\n"
        f"frontend serving\n  bind 127.0.0.1:{fe_serving}\n  default_backend serving\n"
        f"frontend drift\n  bind 127.0.0.1:{fe_drift}\n  default_backend drift\n"
        + backend("serving", serving)
        + backend("drift", drift)
    )


@dataclass
class Outcome:
    ok: list[tuple[str, str]] = field(default_factory=list)  # (model_version, prediction_id)
    failed: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, what)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _load(url: str, key: str, meta: dict, seed: int, stop: threading.Event, out: Outcome) -> None:
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
        n = 0
        due = time.monotonic()
        while not stop.is_set():
            due += 1.0 / RATE_PER_CLIENT
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                due = time.monotonic()  # behind schedule: no catch-up burst
            # clients reuse their ids: never the dedupe key
            body = random_v2_body(meta, f"client-{seed}-{n % 4}", rng, ROWS)
            n += 1
            start = time.monotonic()
            try:
                r = client.post(f"/v2/models/{MODEL}/infer", json=body)
                if r.status_code == 200:
                    doc = r.json()
                    with out.lock:
                        out.ok.append((doc["model_version"], doc["parameters"]["prediction_id"]))
                    continue
                what = f"HTTP {r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                what = f"{type(exc).__name__}: {exc}"
            with out.lock:
                out.failed.append((start, time.monotonic(), what))


def _wait(predicate, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {deadline_s:.0f}s")


def test_prod_topology_survives_killed_replicas_exactly_once(demo_registry, postgres, tmp_path):
    from mlplatform.drift.settings import DriftSettings
    from mlplatform.drift.store_pg import PostgresDriftStore
    from mlplatform.serving.settings import ServingSettings
    from tests.deploy.rendered import container_env, render_overlay, retrain_job_template_text, workload

    objects = render_overlay("prod")
    serving_rendered = container_env(objects, "model-serving")
    drift_rendered = container_env(objects, "drift-detection")
    _check_known(serving_rendered, "SERVING_", ServingSettings)
    _check_known(drift_rendered, "DRIFT_", DriftSettings)
    assert workload(objects, "drift-detection")["metadata"]["namespace"] == NAMESPACE
    # what the rendered overlay promises and this test relies on
    assert serving_rendered["SERVING_SECRETS_BACKEND"] == drift_rendered["DRIFT_SECRETS_BACKEND"] == "vault"
    assert serving_rendered["SERVING_AUTH_ENABLED"] == drift_rendered["DRIFT_AUTH_ENABLED"] == "true"
    assert serving_rendered["SERVING_DRIFT_URL"].startswith("http://drift-detection")
    assert drift_rendered["DRIFT_RETRAIN_MODE"] == "kubernetes"
    assert serving_rendered["OTEL_EXPORTER_OTLP_ENDPOINT"] and serving_rendered["SERVING_LOG_LEVEL"] == "INFO"

    client_key, drift_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)

    def digest(k: str) -> str:
        return hashlib.sha256(k.encode()).hexdigest()

    job_template = tmp_path / "retrain" / "job.yaml"
    job_template.parent.mkdir()
    job_template.write_text(retrain_job_template_text(objects))
    dsn = postgres.create_database()
    fe_serving, fe_drift = free_port(), free_port()
    serving_ports, drift_ports = [free_port(), free_port()], [free_port(), free_port()]
    logs = tmp_path / "logs"
    rbac = [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    tokens = {DRIFT_SA_TOKEN: f"system:serviceaccount:{NAMESPACE}:drift-detection"}

    with OtlpReceiver() as otlp, KubeApiDouble(rbac, tokens) as kube:
        common = {
            "MLFLOW_TRACKING_URI": demo_registry.tracking_uri,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "HOME": str(tmp_path / "home"),
            "XDG_CACHE_HOME": str(tmp_path / "home" / ".cache"),
            "MPLCONFIGDIR": str(tmp_path / "home" / ".cache" / "matplotlib"),
        }

        def serving_env(data_dir: Path) -> dict[str, str]:
            return _process_env(
                serving_rendered,
                {
                    **common,
                    "MLPLATFORM_DATA_DIR": str(data_dir),
                    "SERVING_SECRETS_BACKEND": "env",
                    "MLPLATFORM_API_KEYS": f"{digest(client_key)}:infer",
                    "SERVING_DRIFT_API_KEY": drift_key,
                    "SERVING_DRIFT_URL": f"http://127.0.0.1:{fe_drift}",
                    "SERVING_FEATURE_STORE_URL": f"http://127.0.0.1:{free_port()}",  # not used: no entity keys
                    # the chart's gRPC port (8081), a free one per replica: they share one host here
                    "SERVING_GRPC_PORT": str(free_port()),
                },
            )

        def drift_env(data_dir: Path) -> dict[str, str]:
            return _process_env(
                drift_rendered,
                {
                    **common,
                    "MLPLATFORM_DATA_DIR": str(data_dir),
                    "DRIFT_SECRETS_BACKEND": "env",
                    "MLPLATFORM_API_KEYS": f"{digest(drift_key)}:drift:write|drift:read|admin",
                    "DRIFT_DATABASE_URL": dsn,
                    "DRIFT_RETRAIN_JOB_TEMPLATE": str(job_template),
                    "DRIFT_RETRAIN_NAMESPACE": NAMESPACE,
                    "DRIFT_KUBE_API_URL": kube.url,
                    "DRIFT_KUBE_TOKEN": DRIFT_SA_TOKEN,
                },
            )

        procs: dict[str, ServiceProcess] = {}
        haproxy_cfg = tmp_path / "haproxy.cfg"
        haproxy_cfg.write_text(_haproxy_config(serving_ports, drift_ports, fe_serving, fe_drift))
        haproxy = subprocess.Popen(
            ["haproxy", "-f", str(haproxy_cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        stop = threading.Event()
        out = Outcome()
        threads: list[threading.Thread] = []
        try:
            for i, port in enumerate(drift_ports):
                procs[f"drift{i}"] = start_service(
                    "drift-detection", drift_env(tmp_path / f"drift{i}"), logs, port=port
                )
            for i, port in enumerate(serving_ports):
                procs[f"serving{i}"] = start_service(
                    "model-serving", serving_env(tmp_path / f"serving{i}"), logs, port=port, ready_timeout=240
                )
            serving_url = f"http://127.0.0.1:{fe_serving}"
            wait_ready(serving_url, 30)
            wait_ready(f"http://127.0.0.1:{fe_drift}", 30)
            meta = httpx.get(
                f"{serving_url}/v2/models/{MODEL}",
                headers={"Authorization": f"Bearer {client_key}"},
                timeout=10,
            ).json()
            threads = [
                threading.Thread(
                    target=_load, args=(serving_url, client_key, meta, s, stop, out), daemon=True
                )
                for s in range(CLIENTS)
            ]
            for t in threads:
                t.start()

            def answered() -> int:
                with out.lock:
                    return len(out.ok)

            # 1. a crashed serving container, restarted in its pod (same emptyDir)
            _wait(lambda: answered() >= 300, 120, "300 answered requests")
            killed_serving_pid_prefix = _prediction_prefix(procs["serving0"], client_key)
            t_kill_serving = time.monotonic()
            procs["serving0"].proc.kill()
            procs["serving0"].proc.wait()
            t_reaped = time.monotonic()  # its sockets are closed by now: later requests cannot reach it
            procs["serving0"] = start_service(
                "model-serving",
                serving_env(tmp_path / "serving0"),
                logs,
                port=serving_ports[0],
                ready_timeout=240,
            )
            t_serving_back = time.monotonic()

            # 2. a drift replica killed and rescheduled with an empty disk
            _wait(lambda: answered() >= 900, 180, "900 answered requests")
            procs["drift0"].proc.kill()
            procs["drift0"].proc.wait()
            procs["drift0"] = start_service(
                "drift-detection", drift_env(tmp_path / "drift0-rescheduled"), logs, port=drift_ports[0]
            )

            # 3. the other serving pod deleted (SIGTERM: drain), replaced with an empty disk
            _wait(lambda: answered() >= 1300, 180, "1300 answered requests")
            t_term = time.monotonic()
            # uvicorn re-raises the signal after a graceful shutdown: -15 is a clean exit here
            assert procs["serving1"].stop(signal.SIGTERM, timeout=60) in (0, -signal.SIGTERM)
            assert "Application shutdown complete." in procs["serving1"].logs()
            procs["serving1"] = start_service(
                "model-serving",
                serving_env(tmp_path / "serving1-rescheduled"),
                logs,
                port=serving_ports[1],
                ready_timeout=240,
            )
            _wait(lambda: answered() >= 2000, 240, "2000 answered requests")
            stop.set()
            for t in threads:
                t.join(60)

            expected = {(v, pid, row) for v, pid in out.ok for row in range(ROWS)}
            store = PostgresDriftStore(dsn)
            try:
                _wait(
                    lambda: {(v, p, r) for m, v, p, r in store.record_keys() if m == MODEL} >= expected,
                    120,
                    "every answered row in drift's database",
                )
                keys = store.record_keys()
                stored = {(v, p, r) for m, v, p, r in keys if m == MODEL}
                assert len(keys) == len(set(keys))  # exactly once
                extra = stored - expected
                # rows logged ahead by the crashed process for requests it never answered
                assert all(p.startswith(killed_serving_pid_prefix) for _, p, _ in extra), sorted(extra)[:5]
                assert len(extra) <= CLIENTS * ROWS

                # windows: disjoint, complete up to the open remainder, and computed right
                window_size = DriftSettings().window_size
                windows = store.windows(MODEL, limit=1000)
                in_windows = [
                    (r.version, r.prediction_id, r.row_index)
                    for w in windows
                    for r in store.window_records(w.id)
                ]
                assert len(in_windows) == len(set(in_windows)) == sum(w.n_records for w in windows)
                assert set(in_windows) <= stored
                assert all(w.n_records == window_size for w in windows)
                assert len(stored) - len(in_windows) < window_size  # all but the last partial window
                assert len(windows) >= 3
                _assert_windows_recompute(store, windows, demo_registry.tracking_uri, tmp_path)

                # one drift episode, one Job, created by the drift service account under the rendered RBAC
                assert all(w.dataset_drift for w in windows)
                events = store.retrain_events(MODEL)
            finally:
                store.close()
            assert [e["outcome"] for e in events] == ["started"], events
            assert kube.denied == []
            assert len(kube.jobs) == 1, [j.body["metadata"] for j in kube.jobs]
            job = kube.jobs[0]
            assert job.namespace == NAMESPACE and job.subject == tokens[DRIFT_SA_TOKEN]
            assert job.body["metadata"]["labels"]["mlplatform.io/model"] == MODEL
            container = job.body["spec"]["template"]["spec"]["containers"][0]
            assert container["command"] == ["mlplatform", "retrain"]
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["MLPLATFORM_RETRAIN_MODEL"] == MODEL and env["MLPLATFORM_RETRAIN_PROMOTE"] == "manual"

            # failures: only requests in flight on the crashed serving process
            in_flight = [f for f in out.failed if f[0] <= t_reaped and f[1] >= t_kill_serving]
            assert in_flight == out.failed, (t_kill_serving, t_reaped, out.failed)
            assert len(out.failed) <= CLIENTS, out.failed
            assert t_serving_back < t_term  # the graceful replacement came after the crash was over
            assert otlp.spans, "prod's tracing setting exported no spans"
            print(
                f"\ntopology: answered {len(out.ok)} requests ({len(expected)} rows), failed {len(out.failed)}; "
                f"drift stored {len(stored)} rows ({len(extra)} logged ahead but never answered), "
                f"duplicates {len(keys) - len(set(keys))}, windows {len(windows)}, jobs {len(kube.jobs)}"
            )
        finally:
            stop.set()
            for t in threads:
                t.join(10)
            for p in procs.values():
                p.stop()
            haproxy.terminate()
            haproxy.wait(10)


def _prediction_prefix(proc: ServiceProcess, key: str) -> str:
    """The prediction-id prefix of one serving process (asked directly, not through the proxy)."""
    meta = httpx.get(f"{proc.url}/v2/models/{MODEL}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    rng = np.random.default_rng(99)
    r = httpx.post(
        f"{proc.url}/v2/models/{MODEL}/infer",
        json=random_v2_body(meta.json(), "probe", rng, ROWS),
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()["parameters"]["prediction_id"].rsplit("-", 1)[0] + "-"


def _assert_windows_recompute(store, windows, tracking_uri: str, tmp_path: Path) -> None:
    """Each stored window result equals one process computing it over the same records."""
    from mlplatform.core.registry import mlflow_client
    from mlplatform.drift import stats
    from mlplatform.drift.detector import DriftDetector
    from mlplatform.drift.settings import DriftSettings

    share = DriftSettings().drift_share
    client = mlflow_client(tracking_uri)
    detectors: dict[str, DriftDetector] = {}
    for w in windows:
        det = detectors.get(w.version)
        if det is None:
            det = DriftDetector(MODEL, w.version, tmp_path / "recompute")
            det.load(client)
            detectors[w.version] = det
        recs = store.window_records(w.id)
        again = stats.as_json(
            det.detect(det.frame([r.inputs for r in recs], [r.prediction for r in recs]), share)
        )
        assert again["drift_share"] == pytest.approx(w.result["drift_share"])
        assert again["dataset_drift"] == w.result["dataset_drift"] == w.dataset_drift
        for name, col in again["features"].items():
            stored = w.result["features"][name]
            assert col["method"] == stored["method"]
            assert col["statistic"] == pytest.approx(stored["statistic"], rel=1e-9, abs=1e-12), name
            assert col["drifted"] == stored["drifted"], name
