"""Where replicas go on a cluster, decided before Ray is asked (no Ray needed to check it)."""

from __future__ import annotations

import pathlib

import pytest

from nemo_gym.config import ServerInstance
from nemo_gym.errors import ConfigError
from nemo_gym.launcher import ReplicaSlot
from nemo_gym.launcher_ray import actor_options, place


def slots(name: str, replicas: int, resources: dict[str, float] | None = None) -> list[ReplicaSlot]:
    instance = ServerInstance(
        name=name,
        server_type="resources_servers",
        implementation="x",
        entrypoint="app.py",
        host="127.0.0.1",
        port=1,
        directory=pathlib.Path("."),
        num_replicas=replicas,
        ray_resources=resources or {},
    )
    return [ReplicaSlot(instance, index, "127.0.0.1", 1) for index in range(replicas)]


def node(node_id: str, **resources: float) -> dict:
    return {"NodeID": node_id, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 4.0, **resources}}


NODES = [node("a", gpu_box=1), node("b"), node("c")]


def test_replicas_of_a_server_go_to_distinct_nodes_and_servers_spread():
    placed = place(slots("env", 3) + slots("agent", 2), NODES)
    assert len({placed[("env", r)] for r in range(3)}) == 3
    assert placed[("agent", 0)] != placed[("agent", 1)]


def test_more_replicas_than_nodes_wrap_around_evenly():
    placed = place(slots("env", 4), NODES[1:])
    assert sorted(placed.values()) == ["b", "b", "c", "c"]


def test_resources_restrict_the_nodes_and_an_impossible_request_is_one_clear_error():
    placed = place(slots("judge", 2, {"gpu_box": 0.5}), NODES)
    assert set(placed.values()) == {"a"}  # one node can hold it: both replicas there, rather than none
    with pytest.raises(ConfigError, match=r"no node of the Ray cluster has what server 'big' asks for .*num_cpus"):
        place(slots("big", 1, {"num_cpus": 64}), NODES)


def test_ray_resources_become_actor_options():
    assert actor_options({}) == {"num_cpus": 0}
    assert actor_options({"num_cpus": 2, "memory": 1e9, "gpu_box": 1}) == {
        "num_cpus": 2,
        "memory": 1e9,
        "resources": {"gpu_box": 1},
    }
