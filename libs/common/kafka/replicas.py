"""Replicated topics on a cluster of brokers: who leads each partition, which are in sync.

For the multi-broker tests (``devstack.cluster``) and operators' checks; the services
themselves never need to know where a partition's leader is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import errors as Errors
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from common.kafka.security import client_options
from common.settings import CommonSettings

NO_LEADER = -1
T = TypeVar("T")


@dataclass(frozen=True)
class PartitionReplicas:
    """One partition as the cluster's metadata describes it: the node that leads it
    (``NO_LEADER`` if none), the nodes holding a replica and those in sync."""

    leader: int
    replicas: tuple[int, ...]
    in_sync: tuple[int, ...]


def _admin(settings: CommonSettings, timeout_s: float) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        **client_options(settings),
        client_id="tenure-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )


async def _ask(
    settings: CommonSettings,
    timeout_s: float,
    call: Callable[[AIOKafkaAdminClient], Awaitable[T]],
) -> T:
    """``call`` on an admin client, again on a new one while no broker answers it (the
    admin client sends to any node of the metadata, which still names a node just
    killed), for up to ``timeout_s``; then ``TimeoutError``."""
    async with asyncio.timeout(timeout_s):
        while True:
            admin = _admin(settings, timeout_s)
            try:
                await admin.start()
                return await call(admin)
            except (KafkaError, OSError) as exc:
                if not getattr(exc, "retriable", True):
                    raise
            finally:
                await admin.close()
            await asyncio.sleep(0.2)


async def describe_partitions(
    settings: CommonSettings, topic: str, *, timeout_s: float = 10.0
) -> dict[int, PartitionReplicas]:
    """Each partition of ``topic``, by number, as the cluster's metadata has it now (a
    leader that just died is still named until the controller notices). Raises
    ``KafkaError`` if the topic is unknown, ``TimeoutError`` if no broker answers."""
    described = await _ask(settings, timeout_s, lambda admin: admin.describe_topics([topic]))
    for entry in described:
        if entry["topic"] != topic:
            continue
        if entry["error_code"]:
            raise Errors.for_code(entry["error_code"])(f"topic {topic}")
        return {
            p["partition"]: PartitionReplicas(
                leader=p["leader"], replicas=tuple(p["replicas"]), in_sync=tuple(p["isr"])
            )
            for p in entry["partitions"]
        }
    raise KafkaError(f"topic {topic} not in the metadata")


async def partition_leaders(
    settings: CommonSettings, topic: str, *, timeout_s: float = 10.0
) -> dict[int, int]:
    """The node leading each partition of ``topic`` (``NO_LEADER`` if none); see
    :func:`describe_partitions`."""
    partitions = await describe_partitions(settings, topic, timeout_s=timeout_s)
    return {number: p.leader for number, p in partitions.items()}


async def live_brokers(settings: CommonSettings, *, timeout_s: float = 10.0) -> set[int]:
    """The ids of the brokers the cluster's metadata lists as registered now."""
    described = await _ask(settings, timeout_s, lambda admin: admin.describe_cluster())
    return {broker["node_id"] for broker in described["brokers"]}


TOPIC_CONFIG = 1  # DescribeConfigs v1 config_source: set on the topic itself


async def topic_overrides(
    settings: CommonSettings, topic: str, *, timeout_s: float = 10.0
) -> dict[str, str]:
    """The configuration set on ``topic`` itself when it was created or altered (not what
    it inherits from the broker's defaults), name -> value."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    responses = await _ask(
        settings,
        timeout_s,
        lambda admin: admin.describe_configs([resource], include_synonyms=True),
    )
    found: dict[str, str] = {}
    for response in responses:
        for code, message, _type, _name, entries in response.resources:
            if code:
                raise Errors.for_code(code)(f"topic {topic}: {message}")
            for name, value, _read_only, source, *_ in entries:
                if source == TOPIC_CONFIG:
                    found[name] = value
    return found
