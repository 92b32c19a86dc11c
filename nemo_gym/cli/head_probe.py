"""Is a stack's head server answering at an address, and which config was it started from?

One probe for every command that either talks to running servers or starts its own. urllib, not
httpx or aiohttp: it runs once per command, and importing httpx cost ~15% of a CLI's start-up.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from nemo_gym.config import GlobalConfig, load_global_config
from nemo_gym.errors import ConfigError
from nemo_gym.free_ports import free_port

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy


@dataclass(frozen=True)
class RunningHead:
    url: str
    config_digest: str | None
    """`GlobalConfig.stack_digest()` of the running stack; None when its head does not say (an older version)."""


def head_is_up(head_url: str) -> bool:
    return probe_head(head_url) is not None


def probe_head(head_url: str, timeout_s: float = 1.0) -> RunningHead | None:
    """The head answering at `head_url`, or None when nothing healthy answers there."""
    try:
        with _OPENER.open(f"{head_url}/health", timeout=timeout_s) as response:
            if response.status != 200:
                return None
    except (urllib.error.URLError, OSError):
        return None
    digest: str | None = None
    try:
        with _OPENER.open(f"{head_url}/stack_identity", timeout=timeout_s) as response:
            value = json.loads(response.read()).get("config_digest")
            digest = value if isinstance(value, str) else None
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        pass  # a head without the endpoint: its stack cannot be told apart, so it is taken as it is
    return RunningHead(head_url, digest)


def stack_to_use(
    config: GlobalConfig, argv: list[str], note: Callable[[str], None]
) -> tuple[GlobalConfig, RunningHead | None]:
    """For a command that starts its own servers when none run: the config to go on with, and the
    running head to use (None: start the config's servers).

    A stack already running at the head address is used when it was started from the same configs,
    or when this command configures no servers (the NeMo Gym way: `ng_run` in one terminal). One
    started from other configs is never used in its place, which would collect another model's or
    environment's rows under this command's name: with the default head port the command starts its
    own stack on a free one; with a head port it was given, it stops with one line.
    """
    running = probe_head(config.head_url)
    if running is None or not config.instances:
        return config, running
    if running.config_digest is None or running.config_digest == config.stack_digest():
        note(f"Servers are already running at {running.url}; using them instead of starting the configured ones.")
        return config, running
    if config.head_port_chosen:
        raise ConfigError(
            f"another stack, started from different configs, holds the head port: {running.url}; stop it, "
            f"or give this command a free +head_server.port"
        )
    port = free_port(config.head_host)
    note(
        f"Another stack, started from different configs, is running at {running.url}; starting this "
        f"command's own servers with their head on port {port}."
    )
    return load_global_config([*argv, f"++head_server.port={port}"]), None
