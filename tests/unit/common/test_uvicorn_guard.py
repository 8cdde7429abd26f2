"""The uvicorn workaround's contract with the pinned uvicorn (see common/uvicorn_guard.py).

The guard overrides callbacks of uvicorn's httptools protocol, which uvicorn does not
document: if an upgrade renames or drops one, these fail before any slow client gets
through. The behaviour itself is tested on loopback in tests/integration/test_http_limits.py.
"""

from __future__ import annotations

import inspect
import pickle
import tomllib
from importlib.metadata import version
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from common.runtime import server_config
from common.uvicorn_guard import GuardedHttpToolsProtocol, HttpLimits

ROOT = Path(__file__).resolve().parents[3]
OVERRIDDEN = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "on_message_complete",
)


def pinned(package: str) -> str:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [spec] = [d for d in dependencies if d.startswith(f"{package}==")]
    return spec.split("==")[1]


def test_the_installed_uvicorn_and_httptools_are_the_pinned_ones() -> None:
    assert uvicorn.__version__ == version("uvicorn") == pinned("uvicorn")
    assert version("httptools") == pinned("httptools")


def test_every_overridden_callback_exists_in_uvicorns_protocol_with_its_signature() -> None:
    for name in OVERRIDDEN:
        base = getattr(HttpToolsProtocol, name)  # AttributeError if uvicorn dropped it
        ours = getattr(GuardedHttpToolsProtocol, name)
        assert ours is not base, name
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(base).parameters
        ), name
    # state of uvicorn's protocol the guard reads
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.connections", "self.cycle", "self.transport", "self.loop"):
        assert attribute in source, attribute
    assert "self.response_complete" in inspect.getsource(RequestResponseCycle)


def test_uvicorn_builds_its_connections_with_the_guard_and_the_limits() -> None:
    limits = HttpLimits(header_timeout_s=3, keep_alive_s=7)
    config = server_config(lambda *_: None, host="127.0.0.1", port=0, limits=limits)
    config.load()
    factory = config.http_protocol_class
    assert factory.func is GuardedHttpToolsProtocol  # type: ignore[attr-defined]
    assert factory.keywords == {"limits": limits}  # type: ignore[attr-defined]
    assert config.timeout_keep_alive == 7
    # uvicorn sends its configuration to worker processes pickled
    assert pickle.loads(pickle.dumps(limits.protocol())).keywords == {"limits": limits}
