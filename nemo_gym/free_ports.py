"""Pick a free TCP port for a server that will bind it a little later.

Asking the kernel for port 0 hands out a port from the ephemeral range, the same range the kernel draws
from for outgoing connections. Between picking a port and the server binding it, any connection this
machine opens (a client to a model server, a test's HTTP request) may take it, and the server then fails
with "address already in use". So the port is drawn at random from below the ephemeral range, where
the kernel never assigns one on its own, and checked bindable; only if that range is unavailable does it
fall back to the kernel's choice.
"""

from __future__ import annotations

import pathlib
import random
import socket
from collections.abc import Collection

_LOWEST = 10_000
_TRIES = 200
_EPHEMERAL_RANGE_FILE = pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default; macOS starts at 49152, so this stays below it too


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A port on `host` that nothing holds now, outside the kernel's ephemeral range when possible, and not
    in `avoid`. Raises OSError when `host` is not a local address."""
    top = _ephemeral_start()
    rng = random.SystemRandom()  # separate processes (test workers, parallel launches) must not draw alike
    if top - _LOWEST >= 1_000:
        for _ in range(_TRIES):
            port = rng.randrange(_LOWEST, top)
            if port not in avoid and _bindable(host, port):
                return port
    for _ in range(_TRIES):
        port = _kernel_port(host)
        if port not in avoid:
            return port
    raise OSError(f"no free port on {host}")
