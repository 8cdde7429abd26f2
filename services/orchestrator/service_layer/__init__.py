"""The orchestrator's use cases: what a request or a record asks for, over its adapters."""
