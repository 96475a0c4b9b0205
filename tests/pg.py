"""A real PostgreSQL server for tests: Debian's ``postgresql`` binaries, a fresh cluster on a free port.

``initdb`` into a temporary directory, ``postgres`` listening on 127.0.0.1 only (no Unix socket in a
shared place), trust authentication for the local test user. Each test that wants isolation asks for a
fresh database with :meth:`PostgresServer.create_database`. Works as root too: the cluster is owned by
the ``postgres`` system user then (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.procs import free_port


def pg_bin_dir() -> Path | None:
    """Directory of Debian's PostgreSQL server binaries (newest major version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("postgres")
    return Path(exe).parent if exe else None


@dataclass
class PostgresServer:
    """One running PostgreSQL cluster; ``dsn(db)`` gives a libpq URL to a database in it."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    user: str = "mlplatform"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a new empty database and return its DSN."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def require_password(self, database: str, role: str, deadline_s: float = 15.0) -> None:
        """Make ``role`` authenticate with its password (scram-sha-256) on ``database`` (the cluster
        trusts everyone else), and wait until the server refuses a wrong password. On a timeout the
        error carries what the server parsed (``pg_hba_file_rules``) and its log tail."""
        import psycopg

        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(f"host {database} {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")  # only signals the postmaster: wait for it below
        wrong = f"postgresql://{role}:wrong@127.0.0.1:{self.port}/{database}"
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                psycopg.connect(wrong, connect_timeout=3).close()
            except psycopg.OperationalError:
                return
            time.sleep(0.05)
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            rules = conn.execute(
                "SELECT line_number, database, user_name, auth_method, error FROM pg_hba_file_rules"
            ).fetchall()
            hba_file = conn.execute("SHOW hba_file").fetchone()
        log = self.data_dir.parent / "postgres.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        raise AssertionError(
            f"PostgreSQL still accepts a wrong password for {role} after {deadline_s}s; hba_file {hba_file}, "
            f"file head {hba.read_text()[:300]!r}; parsed rules {rules[:5]}; log tail:\n{tail}"
        )

    def stop(self, fast: bool = True) -> None:
        """Stop the server (SIGINT: fast shutdown) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(2 if fast else 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); ``restart`` brings it back on the same port and data."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        # orphaned backends keep the shared memory: wait until they are gone
        deadline = time.monotonic() + 15
        while (self.data_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
            pid_line = (self.data_dir / "postmaster.pid").read_text().split("\n")[0]
            try:
                os.kill(int(pid_line), 0)
            except (ProcessLookupError, ValueError):
                break
            time.sleep(0.05)

    def restart(self) -> None:
        """Start the server again on the same port and data directory."""
        self.stop()
        fresh = _launch(self.data_dir, self.port)
        self.proc = fresh


def _as_postgres_user() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _launch(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    bindir = pg_bin_dir()
    assert bindir is not None
    log = open(data_dir.parent / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [
            str(bindir / "postgres"),
            "-D",
            str(data_dir),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(data_dir),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=data_dir.parent,
        **_as_postgres_user(),  # type: ignore[arg-type]
    )
    _wait_accepting(port, proc, data_dir)
    return proc


def _wait_accepting(
    port: int, proc: subprocess.Popen[bytes], data_dir: Path, deadline_s: float = 30.0
) -> None:
    import psycopg

    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            log = (data_dir.parent / "postgres.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{log}")
        try:
            with psycopg.connect(
                f"postgresql://mlplatform@127.0.0.1:{port}/postgres", connect_timeout=1
            ) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"postgres on port {port} not accepting connections: {last}")


def start_postgres(root: Path) -> PostgresServer:
    """initdb a new cluster under ``root`` and start it on a free port."""
    bindir = pg_bin_dir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o755)
        # every directory above must be traversable by the postgres user
        p = root.parent
        while p != p.parent:
            mode = p.stat().st_mode
            if not mode & 0o001:
                os.chmod(p, mode | 0o001)
            p = p.parent
    done = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "mlplatform",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,  # its user must be able to enter the current directory (a test may chdir anywhere)
        **_as_postgres_user(),  # type: ignore[arg-type]
    )
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed with {done.returncode}: {done.stderr.strip()[-2000:]}")
    port = free_port()
    return PostgresServer(data, port, _launch(data, port))
