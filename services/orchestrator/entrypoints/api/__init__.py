"""The orchestrator's HTTP API (:func:`create_api`)."""

from orchestrator.entrypoints.api.app import create_api

__all__ = ["create_api"]
