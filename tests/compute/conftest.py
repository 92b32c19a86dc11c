"""A two-node Ray cluster on loopback for the Ray-backend tests of this folder.

Module-scoped: its processes are children of the test run, and other tests (the sandbox's) check
that no child process outlives them, so the cluster is gone when a module's tests are done. Ray
workers find this checkout through the driver's working directory, which Ray puts on their path."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    if importlib.util.find_spec("ray") is None:
        pytest.skip("the `ray` extra is not installed")
    from nemo_gym.testing import LocalRayCluster

    with LocalRayCluster([{"compute_test_node_0": 1}, {"compute_test_node_1": 1}]) as cluster:
        yield cluster
