"""Local stand-ins for the outside world: an SMTP sink and a webhook receiver.

Every message the SMTP sink receives is written as ``<n>-<time>.eml`` under the mail
folder; every HTTP request the receiver gets is written as ``<n>-<path>.json`` (method,
path, headers, body) under the webhook folder. Files appear atomically (written, then
renamed), so a reader never sees half a message.

Failures on demand, for retry and bounce tests: the SMTP sink refuses (550) recipients
whose local part starts with ``bounce``, and answers a message to a recipient whose local
part starts with ``slow`` ``SLOW_S`` after storing it (a send in flight, for crash
tests); the receiver answers ``/status/<code>/...`` with that status, and
``/flaky/<n>/...`` with 503 to the first ``n`` requests for that exact path, then 200.
Every request is stored, with the status it got.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

_counter = itertools.count(1)
SLOW_S = 0.25


def _write_atomically(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, final)
    return final


class MailSink:
    """aiosmtpd handler: accepts every message and stores it as an .eml file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.split("@", 1)[0].lower().startswith("bounce"):
            return "550 5.1.1 Mailbox does not exist"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        name = f"{os.getpid()}-{next(_counter):06d}-{stamp}.eml"
        _write_atomically(self.folder, name, envelope.original_content or envelope.content)
        if any(a.split("@", 1)[0].lower().startswith("slow") for a in envelope.rcpt_tos):
            await asyncio.sleep(SLOW_S)  # stored, not yet acknowledged
        return "250 Message accepted for delivery"


class WebhookReceiver:
    """A minimal ASGI app that answers 200 to everything and stores each request."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: dict[str, int] = {}

    def status_for(self, path: str) -> int:
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "status" and parts[1].isdigit():
            return int(parts[1])
        if len(parts) >= 2 and parts[0] == "flaky" and parts[1].isdigit():
            self.seen[path] = self.seen.get(path, 0) + 1
            return 503 if self.seen[path] <= int(parts[1]) else 200
        return 200

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        status = self.status_for(path)
        record = {
            "method": scope["method"],
            "path": path,
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body": body.decode(errors="replace"),
            "received_at": time.time(),
            "status": status,
        }
        slug = path.strip("/").replace("/", "_") or "root"
        name = f"{os.getpid()}-{next(_counter):06d}-{slug}.json"
        _write_atomically(self.folder, name, json.dumps(record, indent=2).encode())
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"ok":true}'})


async def serve(
    mail_dir: Path, smtp_port: int, webhook_dir: Path, webhook_port: int, host: str = "127.0.0.1"
) -> None:
    import uvicorn

    controller = Controller(MailSink(mail_dir), hostname=host, port=smtp_port)
    controller.start()
    config = uvicorn.Config(
        WebhookReceiver(webhook_dir),
        host=host,
        port=webhook_port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    try:
        await server.serve()
    finally:
        controller.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devstack sinks")
    parser.add_argument("--mail-dir", type=Path, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--webhook-dir", type=Path, required=True)
    parser.add_argument("--webhook-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args(argv)
    asyncio.run(
        serve(args.mail_dir, args.smtp_port, args.webhook_dir, args.webhook_port, args.host)
    )
