"""Pure admission rules of the ingest API: event time window, rate limiting. No I/O."""
