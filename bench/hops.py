"""The physical floor of ``event_to_notification_latency_*``: Tenure's hops with no rules.

Two commands, each a process of its own as each Tenure service is:

- ``python -m bench.hops relay --source A --target B``: a bare aiokafka consumer of
  topic A that produces every record (same key, same value) to topic B, as scoring
  forwards an event to ``scores`` and the orchestrator a score to ``notifications``,
  minus their work;
- ``python -m bench.hops mail --source C --message FILE --smtp-port P``: a bare consumer
  of topic C that sends the pre-rendered message of FILE with raw aiosmtplib, envelope
  recipient ``<record key>@example.com``, over ``--connections`` persistent
  connections, as the notifier sends the offer, minus its work.

Consumers: a group of their own, from the earliest offset, offsets auto-committed in
the background (off the path of a record). Producers: ``acks=all``, idempotent,
``linger_ms=0`` (aiokafka's default): the fastest durable hop. A batch's sends are
awaited before the next poll. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

import aiosmtplib
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


def _consumer(bootstrap: str, source: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )


def _stopping() -> asyncio.Event:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    return stopping


async def relay(bootstrap: str, source: str, target: str, group: str) -> None:
    stopping = _stopping()
    consumer = _consumer(bootstrap, source, group)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    await consumer.start()
    try:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            sent = [
                await producer.send(target, key=r.key, value=r.value)
                for records in batch.values()
                for r in records
            ]
            await asyncio.gather(*sent)
    finally:
        await consumer.stop()
        await producer.stop()


async def mail(
    bootstrap: str, source: str, group: str, smtp_port: int, message: bytes, connections: int
) -> None:
    stopping = _stopping()
    consumer = _consumer(bootstrap, source, group)
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port) for _ in range(connections)]
    await asyncio.gather(*(c.connect() for c in clients))
    free: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for client in clients:
        free.put_nowait(client)

    async def send(key: bytes) -> None:
        client = await free.get()
        try:
            await client.sendmail("bench@tenure.example", [f"{key.decode()}@example.com"], message)
        finally:
            free.put_nowait(client)

    await consumer.start()
    try:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            keys = [r.key for records in batch.values() for r in records if r.key is not None]
            await asyncio.gather(*(send(k) for k in keys))
    finally:
        await consumer.stop()
        for client in clients:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.quit()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hops")
    parser.add_argument("role", choices=("relay", "mail"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--target", help="relay: the topic records are forwarded to")
    parser.add_argument("--smtp-port", type=int, help="mail: the sink's port on 127.0.0.1")
    parser.add_argument("--message", type=Path, help="mail: the message to send, as bytes")
    parser.add_argument("--connections", type=int, default=4, help="mail: SMTP connections")
    args = parser.parse_args()
    if args.role == "relay":
        if not args.target:
            parser.error("relay needs --target")
        asyncio.run(relay(args.bootstrap, args.source, args.target, args.group))
    else:
        if not args.smtp_port or not args.message:
            parser.error("mail needs --smtp-port and --message")
        asyncio.run(
            mail(
                args.bootstrap,
                args.source,
                args.group,
                args.smtp_port,
                args.message.read_bytes(),
                args.connections,
            )
        )


if __name__ == "__main__":
    main()
