"""Running a service process: signals → a stop event, HTTP servers beside other loops.

Every Tenure HTTP listener (the APIs and the metrics listeners) is a uvicorn server with
the bounds of :class:`common.uvicorn_guard.HttpLimits`: request head and body timeouts,
a head size bound and a connection cap (see that module for why uvicorn needs help).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

import uvicorn
from prometheus_client import make_asgi_app

from common.metrics import scrape_registry
from common.settings import HttpServiceSettings
from common.uvicorn_guard import HttpLimits


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` until it returns; SIGINT/SIGTERM set ``stop``."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def http_limits(settings: HttpServiceSettings) -> HttpLimits:
    """The bounds a service's settings give its HTTP listeners."""
    return HttpLimits(
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        keep_alive_s=settings.http_keep_alive_s,
        max_connections=settings.http_max_connections,
        max_header_bytes=settings.http_max_header_bytes,
    )


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    limits: HttpLimits,
    lifespan: Literal["on", "off"] = "on",
    **options: Any,
) -> uvicorn.Config:
    """A uvicorn configuration with ``limits`` applied (httptools, no access log)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan=lifespan,
        http=limits.protocol(),
        timeout_keep_alive=limits.keep_alive_s,
        **options,
    )


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to :func:`run_until_signal`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(
    app: Any,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    limits: HttpLimits | None = None,
    lifespan: Literal["on", "off"] = "on",
) -> None:
    """Serve an ASGI app until ``stop`` is set, within ``limits`` (defaults if None)."""
    server = _EmbeddedServer(
        server_config(app, host=host, port=port, limits=limits or HttpLimits(), lifespan=lifespan)
    )

    async def watch() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(watch())
    try:
        await server.serve()
    finally:
        watcher.cancel()


def metrics_app() -> Any:
    """An ASGI app answering any path with the metrics (every worker's, if several)."""
    return make_asgi_app(scrape_registry())


async def serve_service(
    app: Any, settings: HttpServiceSettings, *, port: int, stop: asyncio.Event
) -> None:
    """Serve a service's API as its settings say, and its metrics listener if it has one
    (``metrics_port``), until ``stop`` is set."""
    limits = http_limits(settings)
    servers = [serve_http(app, host=settings.host, port=port, stop=stop, limits=limits)]
    if settings.metrics_port is not None:
        servers.append(
            serve_http(
                metrics_app(),
                host=settings.served_metrics_host,
                port=settings.metrics_port,
                stop=stop,
                limits=limits,
                lifespan="off",
            )
        )
    await asyncio.gather(*servers)


class MetricsServer:
    """A metrics listener on a thread of its own, for processes whose main thread belongs to
    something else (scoring's faust worker, ingest's uvicorn supervisor)."""

    def __init__(self, host: str, port: int, limits: HttpLimits | None = None) -> None:
        self._server = uvicorn.Server(
            server_config(
                metrics_app(), host=host, port=port, limits=limits or HttpLimits(), lifespan="off"
            )
        )
        # Bound here, so that a port in use fails the caller, not the thread.
        self._socket = self._server.config.bind_socket()
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="metrics-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._socket.close()


def serve_metrics(host: str, port: int, limits: HttpLimits | None = None) -> MetricsServer:
    """Serve /metrics on ``host:port`` from a background thread; returns the running server.

    Raises ``OSError`` at once if the address cannot be bound.
    """
    return MetricsServer(host, port, limits).start()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` (real time), returning early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_all(*tasks: Awaitable[Any], stop: asyncio.Event) -> None:
    """Run tasks together; if one fails, stop the others and re-raise."""
    running = [asyncio.ensure_future(t) for t in tasks]
    try:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        for task in running:
            if not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), 10)
                except (TimeoutError, Exception):
                    task.cancel()
