"""The local stack: real Kafka, embedded PostgreSQL, mail and webhook sinks, the services.

Used by ``make run`` (``python -m devstack run``) and by the test harness alike.
"""
