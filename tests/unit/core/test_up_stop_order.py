"""``mlplatform up`` stops the services wave by wave: the clients (model-serving, explainability) exit
before their peers (feature-store, drift-detection) get SIGTERM, so serving's last payloads reach a drift
detection still running. Real child processes stand in for the services: each records when SIGTERM came
and exits, the clients after a short drain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlplatform.cli import stop_services
from mlplatform.services import SERVICES, STOP_WAVES

CHILD = """
import signal, sys, time
name, log, drain = sys.argv[1], sys.argv[2], float(sys.argv[3])
def stop(*_):
    with open(log, "a") as f:
        f.write(f"term {name}\\n")
    time.sleep(drain)
    with open(log, "a") as f:
        f.write(f"exit {name}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def test_every_service_is_in_one_wave() -> None:
    named = [n for wave in STOP_WAVES for n in wave]
    assert sorted(named) == sorted(SERVICES) and len(named) == len(set(named))


def test_clients_exit_before_their_peers_are_stopped(tmp_path: Path) -> None:
    log = tmp_path / "stops.log"
    procs = {}
    for name in SERVICES:
        drain = "0.3" if name in STOP_WAVES[0] else "0"
        p = subprocess.Popen(
            [sys.executable, "-c", CHILD, name, str(log), drain], stdout=subprocess.PIPE, text=True
        )
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        procs[name] = p
    stop_services(procs, timeout_s=10)
    assert all(p.returncode == 0 for p in procs.values())
    events = log.read_text().split("\n")[:-1]
    clients, peers = set(STOP_WAVES[0]), set(STOP_WAVES[1])
    last_client_exit = max(
        i for i, e in enumerate(events) if e.split()[1] in clients and e.startswith("exit")
    )
    first_peer_term = min(i for i, e in enumerate(events) if e.split()[1] in peers and e.startswith("term"))
    assert last_client_exit < first_peer_term, events


def test_a_service_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stdout.readline()
    stop_services({"model-serving": p}, timeout_s=0.5)
    assert p.returncode is not None and p.returncode < 0


def test_a_service_runs_in_its_own_process_group_and_dies_with_up(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to its foreground process group: with the services in their own groups it
    reaches only ``up``, which stops them in waves. If ``up`` itself is killed, they get SIGTERM."""
    import os
    import signal
    import time

    marker = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "from mlplatform.cli import start_child\n"
            f"p = start_child([sys.executable, '-c', 'import time; time.sleep(60)'], dict(os.environ))\n"
            f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(60)\n",
        ]
    )
    deadline = time.monotonic() + 30
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(marker.read_text())
    assert os.getpgid(child) == child != os.getpgid(parent.pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the service outlived up")
