"""The local stack's own promises: a taken port is named, not silently shared."""

from __future__ import annotations

import socket

import pytest

from devstack.procs import PortInUse
from devstack.stack import Stack


def test_a_taken_service_port_is_refused_with_its_name(stack: Stack) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.ports.orchestrator))
        squatter.listen()
        with pytest.raises(PortInUse, match=f"orchestrator: 127.0.0.1:{stack.ports.orchestrator}"):
            stack.start_service("orchestrator")
    assert "orchestrator" not in stack.procs
