"""The orchestrator's errors: one base class, so that a caller can tell ours from the rest.

Every error the orchestrator raises on purpose derives from :class:`OrchestratorError`
(an illegal journey transition, an invalid playbook file, a journey or playbook that
does not exist). Adapters translate library errors at their boundary (a lost database
is :class:`common.outage.DatabaseUnavailable`, shared by every service); only the HTTP
API picks status codes for them (``entrypoints/api/errors.py``).
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class of the orchestrator's errors."""


class JourneyNotFound(OrchestratorError, LookupError):
    """No journey with that id."""


class PlaybookNotFound(OrchestratorError, LookupError):
    """No shipped playbook with that name."""


class CustomerNotFound(OrchestratorError, LookupError):
    """Nothing is kept about that customer."""


class InvalidRequest(OrchestratorError, ValueError):
    """A request's parameter breaks a rule the schema cannot state (a cursor of another
    list, a period the wrong way round): ``parameter`` names it, the message says why."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason
