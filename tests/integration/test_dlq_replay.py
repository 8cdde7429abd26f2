"""``tenure dlq list|replay`` on the real broker: dead letters written as the consumers
write them go back where they came from, once each, with their original key, value,
headers and partition."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest

from common.kafka import DeadLetters, KafkaPublisher, ensure_topics, read_topic
from common.settings import CommonSettings
from common.topics import Topic, topic_name
from devstack.stack import Stack
from tenure_cli import command

pytestmark = pytest.mark.asyncio


async def tenure(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``tenure dlq ...`` in-process (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    status = await asyncio.to_thread(command.main, ["dlq", *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def settings(
    stack: Stack, common_settings: CommonSettings, monkeypatch: pytest.MonkeyPatch
) -> CommonSettings:
    """Settings with a topic prefix of the test's own, also in the environment the
    command reads."""
    prefix = f"dlq-{uuid.uuid4().hex[:8]}."
    for name, value in stack.kafka_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TENURE_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("TENURE_TOPIC_PARTITIONS", str(common_settings.topic_partitions))
    return common_settings.model_copy(update={"topic_prefix": prefix})


async def test_dead_letters_are_listed_and_replayed_once_each(
    capsys: pytest.CaptureFixture[str], settings: CommonSettings
) -> None:
    await ensure_topics(settings, [Topic.NOTIFICATIONS])  # and its dead-letter topic
    topic = topic_name(Topic.NOTIFICATIONS, settings.topic_prefix)
    async with KafkaPublisher(settings, client_id="dlq-test") as publisher:
        for i in range(3):
            headers = [("schema_version", b"9"), ("trace", f"t{i}".encode())]
            await publisher.publish(Topic.NOTIFICATIONS, f"cust-{i}", {"n": i}, headers)
        originals, _ = await read_topic(settings, topic)
        dead_letters = DeadLetters(publisher, consumer_name="notifier")
        for record in originals[:2]:
            await dead_letters.send(record, ValueError(f"schema_version 9 unknown ({record.key})"))
        # as the notifier gives up on a notification it consumed: no partition, no offset
        given_up = replace(originals[2], partition=-1, offset=-1)
        await dead_letters.send(given_up, ValueError("schema_version 9 unknown (expired)"))

    status, out, err = await tenure(capsys, "list", "notifications")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["PARTITION", "OFFSET", "FROM", "CONSUMER", "REPLAYED", "ERROR"]
    assert len(lines) == 4 and all(" no " in line and "notifier" in line for line in lines[1:])
    assert sum("(given up after it was consumed)" in line for line in lines) == 1
    assert "ValueError: schema_version 9 unknown" in out
    assert "3 dead letters, 3 not replayed" in err

    status, out, err = await tenure(capsys, "replay", "notifications", "--limit", "2")
    assert status == 0, err
    assert out.strip() == f"{topic}.dlq: replayed 2 to {topic}; 1 left"
    status, out, _ = await tenure(capsys, "replay", f"{topic}.dlq")  # the full name works too
    assert out.strip() == f"{topic}.dlq: replayed 1 to {topic}; 0 left"
    status, out, _ = await tenure(capsys, "replay", "notifications")
    assert status == 0 and out.strip() == f"{topic}.dlq: replayed 0; 0 left"

    records, _ = await read_topic(settings, topic)
    replays = [r for r in records if any(k == "replayed_from" for k, _ in r.headers)]
    assert len(replays) == 3  # each once, though replay ran three times
    by_key = {r.key: r for r in originals}
    for replay in replays:
        original = by_key[replay.key]
        # the given-up one's partition is its key's: the same as the original's
        assert (replay.value, replay.partition) == (original.value, original.partition)
        kept = [(k, v) for k, v in replay.headers if k != "replayed_from"]
        assert kept == list(original.headers)  # no dlq.* header comes back
        [source] = [v for k, v in replay.headers if k == "replayed_from"]
        assert source.decode().startswith(f"{topic}.dlq:")

    status, out, err = await tenure(capsys, "list", "notifications")
    assert status == 0 and all(" yes " in line for line in out.splitlines()[1:])
    assert "3 dead letters, 0 not replayed" in err


async def test_an_unknown_topic_and_a_bad_limit_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], settings: CommonSettings
) -> None:
    status, out, err = await tenure(capsys, "list", "no-such-topic")
    assert (status, out) == (1, "")
    assert err.strip() == "tenure: error: no topic 'no-such-topic.dlq'"
    status, out, err = await tenure(capsys, "replay", "notifications", "--limit", "0")
    assert (status, out) == (2, "")
    assert err.strip() == "tenure: error: --limit: must be 1 or more, not 0"


async def test_a_record_without_its_dlq_headers_is_listed_and_stops_the_replay(
    capsys: pytest.CaptureFixture[str], settings: CommonSettings
) -> None:
    await ensure_topics(settings, [Topic.SIGNALS])
    topic = topic_name(Topic.SIGNALS, settings.topic_prefix)
    async with KafkaPublisher(settings, client_id="dlq-test") as publisher:
        await publisher.publish(f"{topic}.dlq", "cust-1", {"by": "hand"})  # no dlq.* headers
    status, out, err = await tenure(capsys, "list", "signals")
    assert status == 0 and "no dlq.* headers: not replayable" in out, err
    status, out, err = await tenure(capsys, "replay", "signals")
    assert (status, out) == (1, "")
    assert f"{topic}.dlq:" in err and "has no dlq.* headers and cannot be replayed" in err
    records, _ = await read_topic(settings, topic)
    assert records == []  # nothing sent
