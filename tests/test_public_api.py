"""The public surface is explicit: every package that declares `__all__` exports exactly what it lists."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["nemo_gym.servers", "nemo_gym.rollouts", "nemo_gym.config", "nemo_gym.sandbox", "nemo_gym.viewer"]
PACKAGES += ["nemo_gym.testing", "nemo_gym.scaffold", "nemo_gym.training"]  # test helpers and the environment scaffold
PACKAGES += ["nemo_gym.compute"]  # where CPU-heavy verification runs (its Ray backend is never imported here)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_listed_name_exists_and_every_public_class_is_listed(name):
    package = importlib.import_module(name)
    exported = set(package.__all__)
    assert all(hasattr(package, symbol) for symbol in exported)
    public_classes = {
        symbol for symbol, value in vars(package).items() if isinstance(value, type) and not symbol.startswith("_")
    }
    assert public_classes <= exported, f"{name} exposes unlisted classes: {sorted(public_classes - exported)}"
