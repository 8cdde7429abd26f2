"""Shared library of Tenure: schemas, topics, Kafka, settings, clock, logging, metrics, db."""
