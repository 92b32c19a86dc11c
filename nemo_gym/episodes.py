"""How an episode ended, read off a row: what the quality report counts and `BaseVerifyRequest.cut_off` says.

A ground-floor module (plain mappings in, a string out) so that the collector reads it without importing
the server classes, which bring FastAPI (about half a second of a collection's wall time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EPISODE_END_FIELD = "episode_end"
"""Where a row says how its episode ended (see `nemo_gym.servers.agent.EpisodeEnd` for the values)."""


def episode_end(row: Mapping[str, Any]) -> str:
    """How the episode of a row (or verify request) ended: its `episode_end` when one is written (the
    agent's, kept in stored rows), else read off the response: an incomplete response hit a limit (the
    output-token one unless `incomplete_details` names another), an output ending on a tool result was
    stopped at `max_steps` (the model never saw it), anything else completed."""
    response = row.get("response")
    response = response if isinstance(response, Mapping) else {}
    recorded = row.get(EPISODE_END_FIELD, response.get(EPISODE_END_FIELD))
    if isinstance(recorded, str) and recorded:
        return recorded
    details = response.get("incomplete_details")
    if response.get("status") == "incomplete" or isinstance(details, Mapping) and details.get("reason"):
        reason = details.get("reason") if isinstance(details, Mapping) else None
        return "max_output_tokens" if reason in (None, "max_output_tokens", "length") else str(reason)
    output = response.get("output")
    if (
        isinstance(output, list)
        and output
        and isinstance(output[-1], Mapping)
        and output[-1].get("type") == "function_call_output"
    ):
        return "max_steps"  # the agent stopped with a tool result the model never saw
    return "completed"
