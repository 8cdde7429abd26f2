"""The dead-letter format, written and read back (pure: no broker)."""

from __future__ import annotations

import pytest

from common.kafka import DeadLetter, InvalidRecord, Record, dead_letter_headers


def dead(headers: list[tuple[str, bytes]], offset: int = 4) -> Record:
    return Record("t.notifications.dlq", 1, offset, "c1", b"{}", tuple(headers), 0)


def test_what_is_written_is_read_back_and_the_replay_drops_the_dlq_headers() -> None:
    original = [("schema_version", b"1"), ("trace", b"x")]
    headers = dead_letter_headers(
        [*original, ("ingested_at", b"2026-12-01T10:00:00+00:00")],
        error=ValueError("bad\nsecond line"),
        consumer="notifier",
        topic="t.notifications",
        partition=2,
        offset=17,
    )
    letter = DeadLetter.parse(dead(headers))
    assert (letter.topic, letter.partition, letter.offset) == ("t.notifications", 2, 17)
    assert (letter.consumer, letter.error) == ("notifier", "ValueError: bad\nsecond line")
    # ingested_at dropped: a replay's age is not the business's reaction time
    assert letter.replay_headers == [*original, ("replayed_from", b"t.notifications.dlq:1:4")]


def test_a_record_given_up_after_it_was_consumed_has_no_partition() -> None:
    """The notifier dead-letters a notification it stopped retrying with partition and
    offset -1: a replay lets the key choose the partition."""
    headers = dead_letter_headers(
        [], error="expired", consumer="notifier", topic="t.notifications", partition=-1, offset=-1
    )
    letter = DeadLetter.parse(dead(headers))
    assert (letter.partition, letter.offset) == (None, None)


def test_the_error_is_cut_at_4000_characters() -> None:
    headers = dead_letter_headers(
        [], error="x" * 5000, consumer="c", topic="t", partition=0, offset=0
    )
    assert len(dict(headers)["dlq.error"]) == 4000


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ([("dlq.partition", b"0"), ("dlq.offset", b"1")], "'dlq.topic'"),
        ([("dlq.topic", b"t"), ("dlq.partition", b"zero"), ("dlq.offset", b"1")], "bad dlq header"),
    ],
)
def test_a_record_without_its_dlq_headers_is_named(
    headers: list[tuple[str, bytes]], named: str
) -> None:
    with pytest.raises(InvalidRecord, match=named) as caught:
        DeadLetter.parse(dead(headers))
    assert "t.notifications.dlq:1:4" in str(caught.value)
