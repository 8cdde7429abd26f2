"""The four services on a read-only root filesystem, as deploy/helm/tenure runs them
(readOnlyRootFilesystem; an emptyDir at /tmp and one at scoring's data directory).

There is no container engine here, so each process gets a mount namespace of its own
(``unshare --mount``, as root) in which every mount is remounted read-only, then a tmpfs
is mounted for its temporary files (TMPDIR) and one for scoring's RocksDB directory: a
write anywhere else fails with EROFS. An onboarding journey then runs through all four
(ingest with two workers, whose metrics files go to TMPDIR; scoring's tables; the
orchestrator's timers; the notifier's email).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.procs import spawn, stop, wait_for_port
from devstack.stack import REPO, SERVICES, Stack
from tests.e2e.journeys import fast_env, identify, new_customer, post, wait_for

SCALE = 86_400.0  # one simulated day per real second

# $1: the temporary directory, $2: scoring's data directory, $3: a path that must not be
# writable (the repository); then the command.
READ_ONLY_ROOT = r"""
set -e
for mount_point in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
    mount -o remount,bind,ro "$mount_point" 2>/dev/null || true
done
mount -t tmpfs -o size=256m,mode=1777 tenure-tmp "$1"
mount -t tmpfs -o size=512m tenure-data "$2"
if touch "$3/.tenure-writable" 2>/dev/null; then
    echo "the root filesystem is still writable" >&2
    exit 97
fi
shift 3
exec "$@"
"""


def namespaces_work() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


pytestmark = pytest.mark.skipif(
    not namespaces_work(), reason="needs unshare --mount (root): no mount namespaces here"
)


@pytest.fixture(scope="module")
def read_only(stack: Stack) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in SERVICES:
            writable = stack.root / f"read-only-{name}"
            tmp, data = writable / "tmp", writable / "data"
            for folder in (tmp, data):
                folder.mkdir(parents=True, exist_ok=True)
            env = {
                **stack.env(),
                **fast_env(SCALE),
                "TMPDIR": str(tmp),
                "TENURE_SCORING_DATA_DIR": str(data),
                "TENURE_INGEST_WORKERS": "2",
                "PYTHONDONTWRITEBYTECODE": "1",  # as the image sets it
            }
            argv = [
                *("unshare", "--mount", "--propagation", "private"),
                *("sh", "-c", READ_ONLY_ROOT, "sh", str(tmp), str(data), str(REPO)),
                *(sys.executable, "-m", name),
            ]
            log = stack.log_dir / f"{name}-read-only.log"
            procs[name] = spawn(argv, env=env, cwd=REPO, log_path=log)
        for name, port in stack.service_ports().items():
            wait_for_port(port, timeout=90, proc=procs[name], what=name)
        yield procs
    finally:
        for proc in procs.values():
            stop(proc)


def scored_events(stack: Stack) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.ports.scoring_metrics}/metrics", timeout=5).text
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("tenure_scoring_events_total{") and 'outcome="scored"' in line
    )


def test_the_services_run_on_a_read_only_root(
    stack: Stack, read_only: dict[str, subprocess.Popen[bytes]]
) -> None:
    customer = new_customer("read-only")
    identify(stack, SCALE, customer, plan="pro")
    post(stack, SCALE, customer, "payment", "subscription_started", plan="pro")

    def welcome_sent() -> list[Path]:
        return [
            path
            for path in stack.mail_dir.glob("*.eml")
            if f"To: {customer}@example.com" in path.read_text(errors="replace")
        ]

    wait_for(welcome_sent, 5, "the onboarding welcome email", scale=SCALE)
    wait_for(lambda: scored_events(stack) >= 2, 5, "scoring to score both events", scale=SCALE)
    for name in ("ingest", "orchestrator", "notifier"):
        port = stack.service_ports()[name]
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, f"{name}: {ready.text}"
    assert {name: p.poll() for name, p in read_only.items()} == dict.fromkeys(SERVICES)
    for name in SERVICES:
        log = (stack.log_dir / f"{name}-read-only.log").read_text(errors="replace")
        assert "Read-only file system" not in log, f"{name} tried to write outside its volumes"
    # and each stops cleanly (faust closes its tables, uvicorn its workers) without writing
    for name, proc in read_only.items():
        assert stop(proc, timeout=30) == 0, f"{name} exited {proc.returncode}"
