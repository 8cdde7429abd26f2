"""The scoring service's errors: one base class, so callers can catch the service's own."""

from __future__ import annotations


class ScoringError(Exception):
    """Base class of every error the scoring service raises on purpose."""


class InvalidRecord(ScoringError):
    """A consumed record that cannot be decoded or validated (it goes to the dead-letter
    topic with this error; the worker goes on)."""
