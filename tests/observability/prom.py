"""A real Prometheus server on a free port, configured from observability/ (targets.yaml + rules)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.helpers import stop_process
from tests.observability.promql import OBS, load_module, rule_files
from tests.procs import free_port, wait_ready


class Prometheus:
    """``prometheus`` (Debian package, 2.42) scraping the given services every ``interval``."""

    def __init__(self, workdir: Path, addresses: dict[str, str], interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found: install Debian's prometheus package (make sysdeps)")
        gen = load_module(OBS / "prometheus" / "scrape_config.py", "obs_scrape_config")
        self.config = gen.render(
            gen.load_targets(),
            interval=interval,
            addresses=addresses,
            rule_files=[str(p) for p in rule_files()],
        )
        # Only the services that run here: a missing one would just be a down target.
        self.config["scrape_configs"] = [
            j for j in self.config["scrape_configs"] if j["job_name"] in addresses
        ]
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--enable-feature=exemplar-storage",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=self.url, timeout=10.0)
        wait_ready(self.url, 60.0, self.proc, path="/-/ready", log=self.log_path)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (raises on a PromQL error)."""
        r = self.client.get("/api/v1/query", params={"query": expr})
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {expr}\n{body}")
        result = body["data"]["result"]
        return result if body["data"]["resultType"] in ("vector", "matrix") else [result]

    def wait_for(self, expr: str, deadline_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns at least one sample."""
        end = time.monotonic() + deadline_s
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > end:
                raise TimeoutError(f"no data for {expr} after {deadline_s}s")
            time.sleep(0.25)

    def targets(self) -> list[dict[str, Any]]:
        return self.client.get("/api/v1/targets").json()["data"]["activeTargets"]

    def exemplars(self, expr: str, seconds: float = 600) -> list[dict[str, Any]]:
        now = time.time()
        r = self.client.get(
            "/api/v1/query_exemplars", params={"query": expr, "start": now - seconds, "end": now + 5}
        )
        return r.json()["data"]

    def rule_health(self) -> list[dict[str, Any]]:
        groups = self.client.get("/api/v1/rules").json()["data"]["groups"]
        return [rule for g in groups for rule in g["rules"]]

    def stop(self) -> None:
        self.client.close()
        stop_process(self.proc)
