"""Which launcher starts a command's servers: local processes, or a Ray cluster when `ray_address` is set.

One place for the choice, so `ng_run` and the one-command `ng_collect_rollouts` start the same stack
from the same parameters. The launchers are imported only when a stack is built (the collector's
start-up stays lean when servers already run), and Ray only when an address is given (the `ray` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nemo_gym.config import GlobalConfig
    from nemo_gym.launcher import LaunchOptions, Stack

RAY_ADDRESS_HELP = (
    "Run every server on this Ray cluster instead of as local processes: `auto` (the cluster "
    "this machine belongs to) or host:port of its head. Needs the `ray` extra."
)


def new_stack(config: GlobalConfig, options: LaunchOptions, ray_address: str | None) -> Stack:
    if ray_address is None:
        from nemo_gym.launcher import Stack

        return Stack(config, options)
    from nemo_gym.launcher_ray import RayStack

    return RayStack(config, ray_address, options)
