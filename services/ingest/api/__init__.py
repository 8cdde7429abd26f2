"""The ingest HTTP API: routes, their dependencies, and the errors' status codes."""

from ingest.api.app import build, create_app

__all__ = ["build", "create_app"]
