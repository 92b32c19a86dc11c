"""Fixtures shared by every test folder (library tests and each server's own tests)."""

pytest_plugins = ["nemo_gym.testing.fixtures"]
