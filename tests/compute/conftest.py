"""A two-node Ray cluster on loopback for the Ray-backend tests of this folder.

Module-scoped: its processes are children of the test run, and other tests (the sandbox's) check
that no child process outlives them, so the cluster is gone when a module's tests are done."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    if importlib.util.find_spec("ray") is None:  # not importorskip: ray must not be imported before the cluster
        pytest.skip("the `ray` extra is not installed")
    from nemo_gym.testing.ray_cluster import loopback_ray_cluster

    with loopback_ray_cluster([1, 2]) as cluster:
        yield cluster
