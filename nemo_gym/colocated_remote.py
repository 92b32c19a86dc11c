"""The servers a co-located collection still starts as processes when none run: the head and the model servers.

Apart from `nemo_gym.colocated` because it is a launcher `Stack`: the launcher (and uvicorn, through the
head server) is imported only when `ng_collect_rollouts +colocate=true` has to start servers.
"""

from __future__ import annotations

import hashlib

from nemo_gym.colocated import COLOCATED_SERVER_TYPES
from nemo_gym.launcher import ReplicaSlot, Stack


class RemoteStack(Stack):
    """The head server and the servers co-location leaves as processes (the model servers); only their
    ports are checked, as co-located servers listen on nothing."""

    def _plan_slots(self) -> list[ReplicaSlot]:
        return [slot for slot in super()._plan_slots() if slot.instance.server_type not in COLOCATED_SERVER_TYPES]

    def served_config_digest(self) -> str:
        # Not the config's own digest: this stack lacks its agent and resources servers, so an HTTP-mode
        # collection of the same configs must start its own rather than find nothing behind the agent's name.
        return hashlib.sha256(f"model servers only:{self.config.stack_digest()}".encode()).hexdigest()
