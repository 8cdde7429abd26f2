from datetime import UTC, datetime, timedelta

from ingest.domain.admission import RateLimiter, TokenBucket, check_occurred_at

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = {"now": NOW, "max_future": timedelta(minutes=5), "max_age": timedelta(days=30)}


def test_time_window_edges() -> None:
    assert check_occurred_at(NOW + timedelta(minutes=5), **WINDOW) is None
    assert check_occurred_at(NOW - timedelta(days=30), **WINDOW) is None
    late = check_occurred_at(NOW + timedelta(minutes=5, seconds=1), **WINDOW)
    assert late is not None and late.rule == "too_far_in_future"
    old = check_occurred_at(NOW - timedelta(days=30, seconds=1), **WINDOW)
    assert old is not None and (old.field, old.rule) == ("occurred_at", "too_old")


def test_token_bucket_refills_at_its_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=20)
    assert bucket.take(20, now=0.0) == 0
    assert bucket.take(1, now=0.0) == 0.1
    assert bucket.take(5, now=0.5) == 0
    assert bucket.take(1, now=0.5) > 0
    assert bucket.take(20, now=100.0) == 0  # never more than the burst
    assert bucket.take(21, now=200.0) == float("inf")


def test_rate_limiter_keeps_one_bucket_per_key() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.take("a", 1, 0.0) == 0
    assert limiter.take("b", 1, 0.0) == 0
    assert limiter.take("a", 1, 0.0) > 0
