"""Kafka for every service: the only package that imports aiokafka.

- :mod:`~common.kafka.records`: records, values and errors, free of aiokafka types.
- :mod:`~common.kafka.publisher`: the ``Publisher`` Protocol and ``KafkaPublisher``
  (one idempotent producer, ``acks=all``).
- :mod:`~common.kafka.transactional`: ``TransactionalPublisher``, ingest's group
  commit in Kafka transactions.
- :mod:`~common.kafka.fenced`: ``FencedProducer``, the one transactional writer of a
  single-writer role (the outbox relay).
- :mod:`~common.kafka.consumer`: the ``Consumer`` Protocol and ``KafkaConsumer``.
- :mod:`~common.kafka.runner`: ``run_consumer``, the one consumer loop (decode errors
  to the dead-letter topic, outages waited out, retries, commits), with the
  ``Sequential`` and ``KeyedParallel`` strategies.
- :mod:`~common.kafka.dead_letters`: ``DeadLetters`` (records a consumer cannot process,
  to ``<topic>.dlq`` with the error) and their replay (``tenure dlq``).
- :mod:`~common.kafka.admin`: topics (created and checked), reachability, reading a topic
  to its end (from its beginning, given offsets, or a time).
- :mod:`~common.kafka.security`: ``client_options``, the one builder of every client's
  connection options from the security settings, and ``check_connection``, the start-up
  check that stops a process whose credentials or certificates Kafka refuses.
- :mod:`~common.kafka.lag`: ``GroupLagProbe``, consumer groups' lag seen from outside.
- :mod:`~common.kafka.memory`: ``MemoryBroker`` with ``FakePublisher`` and
  ``FakeConsumer``, for unit tests.
- :mod:`~common.kafka.partitioning`: the key -> partition mapping (murmur2).

Values are JSON (orjson, or pydantic's serializer for models); the key is the customer
id. Consumers read ``read_committed`` and commit after their handler ran, so processing
is at-least-once and handlers are idempotent.
"""

from common.kafka.admin import (
    TopicMismatch,
    broker_reachable,
    committed_headers,
    ensure_internal_topics,
    ensure_topics,
    read_since,
    read_topic,
    topic_configs,
)
from common.kafka.consumer import Consumer, KafkaConsumer, follow, make_consumer
from common.kafka.dead_letters import (
    REPLAYED_FROM,
    DeadLetter,
    DeadLetters,
    DeadLetterTopic,
    NoSuchTopic,
    ReplayReport,
    dead_letter_headers,
    read_dead_letters,
    replay_dead_letters,
)
from common.kafka.fenced import FencedProducer
from common.kafka.lag import GroupBacklog, GroupLagProbe
from common.kafka.memory import FakeConsumer, FakePublisher, MemoryBroker, Published
from common.kafka.partitioning import KeyPartitioner, partition_for
from common.kafka.publisher import KafkaPublisher, Publisher
from common.kafka.records import (
    INVALID,
    CommitFailed,
    Headers,
    InvalidRecord,
    OutgoingRecord,
    Partition,
    PublishError,
    Record,
    encode,
)
from common.kafka.runner import (
    Handler,
    KeyedParallel,
    LagReport,
    Sequential,
    Strategy,
    run_consumer,
)
from common.kafka.security import (
    KafkaSecurityError,
    check_connection,
    client_options,
    require_connection,
    security_options,
)
from common.kafka.transactional import TransactionalPublisher, TransactionReport

__all__ = [
    "INVALID",
    "REPLAYED_FROM",
    "CommitFailed",
    "Consumer",
    "DeadLetter",
    "DeadLetterTopic",
    "DeadLetters",
    "FakeConsumer",
    "FakePublisher",
    "FencedProducer",
    "GroupBacklog",
    "GroupLagProbe",
    "Handler",
    "Headers",
    "InvalidRecord",
    "KafkaConsumer",
    "KafkaPublisher",
    "KafkaSecurityError",
    "KeyPartitioner",
    "KeyedParallel",
    "LagReport",
    "MemoryBroker",
    "NoSuchTopic",
    "OutgoingRecord",
    "Partition",
    "PublishError",
    "Published",
    "Publisher",
    "Record",
    "ReplayReport",
    "Sequential",
    "Strategy",
    "TopicMismatch",
    "TransactionReport",
    "TransactionalPublisher",
    "broker_reachable",
    "check_connection",
    "client_options",
    "committed_headers",
    "dead_letter_headers",
    "encode",
    "ensure_internal_topics",
    "ensure_topics",
    "follow",
    "make_consumer",
    "partition_for",
    "read_dead_letters",
    "read_since",
    "read_topic",
    "replay_dead_letters",
    "require_connection",
    "run_consumer",
    "security_options",
    "topic_configs",
]
