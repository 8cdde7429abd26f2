"""Every error ingest answers with, under one base class.

The service and the API's dependencies raise them; ``ingest.api.errors`` alone turns
each into an HTTP status code and a body. Library errors (pydantic's ValidationError,
the key check's AccessDenied, the publisher's PublishError) are translated into these
where they are caught, so nothing above that point sees a library's exception.
"""

from __future__ import annotations

from collections.abc import Sequence

from ingest.domain.admission import Rejection


class IngestError(Exception):
    """A request ingest refuses, in whole: ``message`` says why, ``errors`` name the fields
    and rules when there are some."""

    def __init__(self, message: str, *, errors: Sequence[Rejection] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = list(errors)


class NotAuthenticated(IngestError):
    """No API key, or one ingest does not know (or that was revoked)."""


class NotAllowed(IngestError):
    """A valid API key without the scope the request needs."""


class UnsupportedMediaType(IngestError):
    """A body that is not declared as JSON."""


class TooLarge(IngestError):
    """A body over its byte limit, or a batch with more events than allowed."""


class Invalid(IngestError):
    """A body that is not an event (or a batch) at all; ``errors`` say where and why."""


class RateLimited(IngestError):
    """The API key sent more events than its rate allows; retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(IngestError):
    """Kafka did not acknowledge the event in time (or the producer's buffer is full):
    nothing was written, a retry is safe."""
