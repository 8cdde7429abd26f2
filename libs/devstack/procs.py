"""Child processes that die with their parent and stop cleanly."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when the process that started it dies, even by SIGKILL,
    # so a crashed supervisor or test run leaves no process behind.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setsid()


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    pipe: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, output to ``log_path`` (or a pipe when ``pipe``)."""
    full_env = {**os.environ, **(env or {})}
    stdout: int | object
    if pipe:
        stdout = subprocess.PIPE
    elif log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stdout = log_path.open("ab")
    else:
        stdout = subprocess.DEVNULL
    return subprocess.Popen(
        list(argv),
        env=full_env,
        cwd=cwd,
        stdout=stdout,  # type: ignore[arg-type]
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )


def stop(proc: subprocess.Popen[bytes], *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to the process group, wait up to ``timeout``, then SIGKILL. Returns the code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def stop_all(
    procs: Sequence[subprocess.Popen[bytes]], *, timeout: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """:func:`stop` for several processes at once: ``sig`` to every process group first,
    then up to ``timeout`` in all for them to exit, SIGKILL for those still running. Each
    gets the same grace as one by one; the waits overlap instead of adding up."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class PortInUse(RuntimeError):
    """Another process already listens where a stack process should."""


def require_free(*ports: int, what: str) -> None:
    """Raise :class:`PortInUse` naming ``what`` if any of ``ports`` is taken on 127.0.0.1."""
    taken = [p for p in ports if port_open(p)]
    if taken:
        raise PortInUse(
            f"{what}: 127.0.0.1:{taken[0]} is already in use (another `make run`?); "
            "stop that process or free the port"
        )


def wait_for_port(
    port: int, *, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what or proc.args} exited with {proc.returncode} before listening"
            )
        time.sleep(0.1)
    raise TimeoutError(f"{what or 'process'} did not listen on 127.0.0.1:{port} in {timeout:.0f}s")
