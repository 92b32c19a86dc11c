"""Ports picked for servers that bind them later stay out of the kernel's ephemeral range, where any
outgoing connection opened in between could take them (a CI run lost a test server that way)."""

import socket

import pytest

from nemo_gym import free_ports
from nemo_gym.free_ports import free_port


def test_picked_ports_are_bindable_and_below_the_ephemeral_range():
    start = free_ports._ephemeral_start()
    ports = {free_port() for _ in range(50)}
    assert all(free_ports._LOWEST <= port < start for port in ports)
    assert len(ports) > 40  # drawn at random, so parallel test workers do not pick alike
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_a_held_or_avoided_port_is_never_picked(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        # A range of exactly two ports: the held one and one more, which is avoided; the kernel's pick is last.
        monkeypatch.setattr(free_ports, "_LOWEST", taken - 1)
        monkeypatch.setattr(free_ports, "_ephemeral_start", lambda: taken + 1_000)
        port = free_port(avoid={*range(taken - 1, taken + 1_000)} - {taken})
        assert port != taken and port not in range(taken - 1, taken + 1_000)


def test_a_host_that_is_not_local_raises_oserror():
    with pytest.raises(OSError):
        free_port("192.0.2.1")  # TEST-NET-1: never an address of this machine
