"""The head server's lifecycle as the launcher drives it, including a launch that fails before it starts."""

from __future__ import annotations

import socket
import time
import urllib.request

from nemo_gym.servers.head import HeadServer, Registry
from nemo_gym.testing import free_port


def test_stopping_a_head_server_that_never_started_is_harmless():
    # A launch refused before the head server starts (a busy server port) still runs the usual cleanup.
    head = HeadServer(Registry([]), "127.0.0.1", free_port())
    head.stop()
    assert not head.started


def test_a_started_head_server_answers_health_and_frees_its_port_when_stopped():
    head = HeadServer(Registry([]), "127.0.0.1", free_port())
    head.start()
    try:
        deadline = time.monotonic() + 10
        while not head.started and time.monotonic() < deadline:
            time.sleep(0.025)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{head.url}/health", timeout=5) as response:
            assert response.status == 200
    finally:
        head.stop()
    with socket.socket() as probe:
        assert probe.connect_ex((head.host, head.port)) != 0
