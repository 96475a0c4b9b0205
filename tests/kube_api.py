"""A Kubernetes API server double for Job creation, with RBAC from real Role/RoleBinding objects.

The API server cannot run here. This double speaks its wire format for the one call drift-detection
makes, ``POST /apis/batch/v1/namespaces/{namespace}/jobs`` (Kubernetes API reference, "Job v1 batch",
create): ``201 Created`` with the Job as the server returns it (``metadata.name`` generated from
``generateName``, ``namespace``, ``uid``, ``creationTimestamp``, ``resourceVersion``), and a ``Status``
object (``kind: Status``, ``reason``, ``code``) for ``401``/``403``/``404``.

Authorisation follows Kubernetes RBAC for namespaced resources: the bearer token names a service
account (``tokens`` maps token -> ``system:serviceaccount:<ns>:<name>``); the request is allowed when a
RoleBinding *in the request's namespace* binds that subject to a Role *in the same namespace* with a
rule matching apiGroup ``batch``, resource ``jobs`` and verb ``create``. Roles and RoleBindings are the
objects the test hands it, e.g. those of a rendered overlay, so a chart whose RBAC does not allow what
the launcher does fails here as it would in the cluster.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class CreatedJob:
    namespace: str
    subject: str
    body: dict[str, Any]


@dataclass
class KubeApiDouble:
    """``with KubeApiDouble(rbac_objects, tokens) as api: ... api.url ... api.jobs ... api.denied``."""

    rbac_objects: list[dict[str, Any]]
    tokens: dict[str, str]
    jobs: list[CreatedJob] = field(default_factory=list)
    denied: list[tuple[str, str, str]] = field(default_factory=list)  # (subject, namespace, why)

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._names = itertools.count(1)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def allowed(self, subject: str, namespace: str, group: str, resource: str, verb: str) -> bool:
        """RBAC for a namespaced request: a RoleBinding in ``namespace`` grants ``subject`` a Role there."""
        roles = {
            o["metadata"]["name"]: o
            for o in self.rbac_objects
            if o["kind"] == "Role" and o["metadata"].get("namespace") == namespace
        }
        for binding in self.rbac_objects:
            if binding["kind"] != "RoleBinding" or binding["metadata"].get("namespace") != namespace:
                continue
            ref = binding["roleRef"]
            if ref.get("kind") != "Role" or ref["name"] not in roles:
                continue
            if not any(_subject(s, namespace) == subject for s in binding.get("subjects", [])):
                continue
            for rule in roles[ref["name"]].get("rules", []):
                if (
                    _matches(rule.get("apiGroups", []), group)
                    and _matches(rule.get("resources", []), resource)
                    and _matches(rule.get("verbs", []), verb)
                ):
                    return True
        return False

    def __enter__(self) -> KubeApiDouble:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                parts = self.path.split("?")[0].strip("/").split("/")
                if not (
                    len(parts) == 6
                    and parts[:4] == ["apis", "batch", "v1", "namespaces"]
                    and parts[5] == "jobs"
                ):
                    return self._status(404, "NotFound", f"the server could not find {self.path}")
                namespace = parts[4]
                auth = self.headers.get("Authorization", "")
                subject = (
                    api.tokens.get(auth.removeprefix("Bearer ").strip())
                    if auth.startswith("Bearer ")
                    else None
                )
                if subject is None:
                    return self._status(401, "Unauthorized", "Unauthorized")
                if not api.allowed(subject, namespace, "batch", "jobs", "create"):
                    with api._lock:
                        api.denied.append((subject, namespace, "no RoleBinding grants create on batch/jobs"))
                    return self._status(
                        403,
                        "Forbidden",
                        f'jobs.batch is forbidden: User "{subject}" cannot create resource "jobs" in API '
                        f'group "batch" in the namespace "{namespace}"',
                    )
                meta = body.setdefault("metadata", {})
                if meta.get("namespace") not in (None, namespace):
                    return self._status(400, "BadRequest", "the namespace of the object does not match")
                with api._lock:
                    meta["name"] = (
                        meta.get("name") or f"{meta.get('generateName', 'job-')}{next(api._names):05d}"
                    )
                    meta.update(
                        namespace=namespace,
                        uid=str(uuid.uuid4()),
                        creationTimestamp="2026-12-07T00:00:00Z",
                        resourceVersion=str(len(api.jobs) + 1),
                    )
                    body["status"] = {}
                    api.jobs.append(CreatedJob(namespace, subject, body))
                self._reply(201, body)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._reply(code, status_body(code, reason, message))

            def _reply(self, code: int, obj: dict[str, Any]) -> None:
                send_json(self, code, obj)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def send_json(handler: BaseHTTPRequestHandler, code: int, obj: dict[str, Any]) -> None:
    """Answer ``code`` with ``obj`` as a JSON body (Content-Type and Content-Length set), as the API
    server answers."""
    data = json.dumps(obj).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes API ``Status`` object for a failed request (the body the API server answers)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(values: list[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def _subject(s: dict[str, Any], binding_namespace: str) -> str:
    if s.get("kind") == "ServiceAccount":
        return f"system:serviceaccount:{s.get('namespace', binding_namespace)}:{s['name']}"
    return s.get("name", "")
