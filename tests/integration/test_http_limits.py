"""Slow and excess clients against Tenure's HTTP listeners, on loopback (issue 13, item 15).

Each test serves an app as the services do (``common.runtime.serve_service``, the
bounds of ``common.uvicorn_guard`` on the pinned uvicorn) and plays clients with raw
sockets: slow ones must be closed within their timeout while a normal client keeps
being served. Counts and times are small, so that the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from common.runtime import serve_metrics, serve_service
from common.uvicorn_guard import HttpLimits
from devstack.procs import free_port
from orchestrator.entrypoints.api import create_api
from orchestrator.settings import OrchestratorSettings

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
SLOW_CLIENTS = 500


def settings(**over: Any) -> OrchestratorSettings:
    values: dict[str, Any] = {
        "http_header_timeout_s": HEADER_TIMEOUT_S,
        "http_body_timeout_s": BODY_TIMEOUT_S,
        "http_max_connections": 2 * SLOW_CLIENTS,
        **over,
    }
    return OrchestratorSettings(**values)


async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
    """``/stream``: a response that takes longer than every timeout; else a small answer."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(5):
            await asyncio.sleep(0.5)
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:  # read the whole body: the app does not hurry the client
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = b"got %d bytes" % len(body)
    headers = [(b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@contextlib.asynccontextmanager
async def served(app: Any, config: OrchestratorSettings) -> AsyncIterator[int]:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_service(app, config, port=port, stop=stop))
    async with asyncio.timeout(10):
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
    try:
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bytes | None:
    """What the server sent before closing the connection, or None if still open."""
    try:
        async with asyncio.timeout(within_s):
            return await reader.read()  # until EOF
    except TimeoutError:
        return None
    except ConnectionError:  # reset, or a write of ours found the connection gone
        return b""


async def test_slow_clients_are_closed_while_a_normal_client_is_served() -> None:
    """500 connections sending a request byte by byte, 4 bytes a second each: all closed
    within the head timeout, while a normal client gets every answer at once."""
    async with served(create_api(settings=settings()), settings()) as port:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(SLOW_CLIENTS)]
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        opened = time.monotonic()

        async def dribble(writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                for byte in request:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.25)

        dribblers = [asyncio.create_task(dribble(w)) for _, w in conns]
        latencies = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            while time.monotonic() - opened < HEADER_TIMEOUT_S + 1.0:
                started = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
        ends = await asyncio.gather(*(closed_by_server(r, 2.0) for r, _ in conns))
        for task in dribblers:
            task.cancel()
        still_open = sum(end is None for end in ends)
        assert still_open == 0, f"{still_open} of {SLOW_CLIENTS} slow connections still open"
        assert max(latencies) < 0.5, f"the normal client waited {max(latencies):.2f} s"
        for _, writer in conns:
            writer.close()


async def test_a_silent_connection_is_closed_after_the_head_timeout() -> None:
    async with served(create_api(settings=settings()), settings()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        assert await closed_by_server(reader, HEADER_TIMEOUT_S + 2) == b""
        assert time.monotonic() - started >= HEADER_TIMEOUT_S * 0.9
        writer.close()


async def test_a_slow_body_is_dropped_after_the_body_timeout() -> None:
    async with served(streaming_app, settings()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        started = time.monotonic()
        for _ in range(3):  # less than the body, and then nothing
            writer.write(b"x")
            await asyncio.sleep(0.1)
        assert await closed_by_server(reader, BODY_TIMEOUT_S + 2) == b""
        assert time.monotonic() - started >= BODY_TIMEOUT_S * 0.9
        writer.close()


async def test_timeouts_bound_receiving_a_request_not_answering_or_keeping_alive() -> None:
    """A response longer than both timeouts completes; a kept-alive connection serves a
    second request; a body that keeps coming within the body timeout is read whole."""
    async with (
        served(streaming_app, settings()) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        started = time.monotonic()
        response = await client.get("/stream")
        assert response.text == "tick\n" * 5
        assert time.monotonic() - started > HEADER_TIMEOUT_S + BODY_TIMEOUT_S

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"y" * 10
                await asyncio.sleep(0.2)

        assert (await client.post("/x", content=chunks())).text == "got 40 bytes"
        await asyncio.sleep(HEADER_TIMEOUT_S + 0.5)  # idle, within the keep-alive
        assert (await client.post("/x", content=b"z")).text == "got 1 bytes"


async def test_an_oversized_head_gets_431() -> None:
    config = settings(http_max_header_bytes=4096)
    async with served(create_api(settings=config), config) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 8192)
        answer = await closed_by_server(reader, 2)
        assert answer is not None and answer.startswith(b"HTTP/1.1 431 ")
        writer.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            big_but_allowed = {"X-Fine": "c" * 3000}
            assert (await client.get("/healthz", headers=big_but_allowed)).status_code == 200


async def test_a_connection_beyond_the_limit_gets_503_and_is_closed() -> None:
    config = settings(http_max_connections=20, http_header_timeout_s=30)
    async with served(create_api(settings=config), config) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await closed_by_server(reader, 2)
        assert answer is not None and answer.startswith(b"HTTP/1.1 503 "), answer
        writer.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200


async def test_the_separate_metrics_listener_closes_slow_clients_too() -> None:
    limits = HttpLimits(header_timeout_s=HEADER_TIMEOUT_S)
    server = await asyncio.to_thread(serve_metrics, "127.0.0.1", free_port(), limits)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/metrics")
        assert response.status_code == 200 and "# TYPE" in response.text
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metr")
        assert await closed_by_server(reader, HEADER_TIMEOUT_S + 2) == b""
        writer.close()
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/metrics"])
async def test_docs_and_metrics_can_be_moved_off_the_api_port(path: str) -> None:
    """Issue 13, item 17: documentation off, metrics on a listener of their own."""
    metrics_port = free_port()
    config = settings(docs=False, metrics_port=metrics_port, metrics_host="127.0.0.1")
    async with (
        served(create_api(settings=config), config) as port,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 404
        assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        metrics = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metrics.status_code == 200 and "# TYPE" in metrics.text
    async with (
        served(create_api(settings=settings()), settings()) as port,  # the defaults
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 200
