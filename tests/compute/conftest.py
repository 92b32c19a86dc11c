"""A two-node Ray cluster on loopback, shared by the Ray-backend tests of this folder."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    if importlib.util.find_spec("ray") is None:  # not importorskip: ray must not be imported before the cluster
        pytest.skip("the `ray` extra is not installed")
    from nemo_gym.testing.ray_cluster import loopback_ray_cluster

    with loopback_ray_cluster([1, 2]) as cluster:
        yield cluster
