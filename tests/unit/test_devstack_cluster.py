"""The cluster's nodes as configured (no process started): one quorum, ids, ports."""

from __future__ import annotations

import base64
from pathlib import Path

from devstack.cluster import KafkaCluster, cluster_overrides, new_cluster_id


def test_cluster_ids_are_kafkas_16_bytes_in_url_safe_base64() -> None:
    for _ in range(200):
        text = new_cluster_id()
        assert len(text) == 22 and not text.startswith("-")
        assert len(base64.urlsafe_b64decode(text + "==")) == 16


def test_three_nodes_share_one_quorum_on_distinct_ports(tmp_path: Path) -> None:
    cluster = KafkaCluster(libs=tmp_path / "libs", home=tmp_path)
    nodes = cluster.nodes
    assert sorted(nodes) == [1, 2, 3]
    ports = [p for node in nodes.values() for p in (node.port, node.controller_port)]
    assert len(set(ports)) == 6
    voters = {line for node in nodes.values() for line in node.overrides if "quorum.voters" in line}
    assert voters == {
        "controller.quorum.voters="
        + ",".join(f"{n}@127.0.0.1:{node.controller_port}" for n, node in nodes.items())
    }
    for n, node in nodes.items():
        assert f"node.id={n}" in node.overrides
        assert node.home == tmp_path / f"node{n}" and node.heap == "256m"
        assert set(cluster_overrides(3, 2)) <= set(node.overrides)
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{n.port}" for n in nodes.values())
    assert cluster.running() == []
