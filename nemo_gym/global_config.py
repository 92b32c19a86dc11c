"""NeMo Gym's `nemo_gym.global_config` import path: the config key names and `get_global_config_dict`.

The key-name constants are the names of NeMo Gym's config keys and row fields (the row fields are
the same here: `_ng_task_index`, `_ng_rollout_index`, `agent_ref`, ...).

`get_global_config_dict()` differs on purpose inside a server process. NeMo Gym hands every server
the whole merged config, secrets of the other servers included; ours gives a server only its own
block (`nemo_gym.servers.launcher_link`). So there the dict holds this server's own block in full,
and for every other running server (and `head_server`) only `host` and `port`: enough for
`get_server_url` and `get_first_server_config_dict(...).host`, never another server's keys. In a
command (no server bootstrap), it is the merged config of the command line, env.yaml and
`config_paths`, as `nemo_gym.config.load_global_config` builds it.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from nemo_gym.errors import UnknownServerError

CONFIG_PATHS_KEY_NAME = "config_paths"
ENTRYPOINT_KEY_NAME = "entrypoint"
DEFAULT_HOST_KEY_NAME = "default_host"
HEAD_SERVER_KEY_NAME = "head_server"
DISALLOWED_PORTS_KEY_NAME = "disallowed_ports"
PYTHON_VERSION_KEY_NAME = "python_version"
HF_TOKEN_KEY_NAME = "hf_token"
RAY_HEAD_NODE_ADDRESS_KEY_NAME = "ray_head_node_address"
PORT_RANGE_LOW_KEY_NAME = "port_range_low"
PORT_RANGE_HIGH_KEY_NAME = "port_range_high"
DRY_RUN_KEY_NAME = "dry_run"
RESULTS_DIR_KEY_NAME = "results_dir"
CACHE_DIR_KEY_NAME = "cache_dir"
INHERIT_FROM_KEY_NAME = "_inherit_from"
VERBOSE_KEY_NAME = "verbose"
SKIP_VERIFICATION_KEY_NAME = "skip_verification"
SKIP_VERIFICATION_REWARD_KEY_NAME = "skip_verification_reward"
TASK_INDEX_KEY_NAME = "_ng_task_index"
ROLLOUT_INDEX_KEY_NAME = "_ng_rollout_index"
ATTEMPT_INDEX_KEY_NAME = "_ng_attempt_index"
ROLLOUT_ID_KEY_NAME = "_ng_rollout_id"
RESPONSES_CREATE_PARAMS_KEY_NAME = "responses_create_params"
RESPONSE_KEY_NAME = "response"
AGENT_REF_KEY_NAME = "agent_ref"
POLICY_BASE_URL_KEY_NAME = "policy_base_url"
POLICY_API_KEY_KEY_NAME = "policy_api_key"  # the key's name, not a key
POLICY_MODEL_NAME_KEY_NAME = "policy_model_name"
POLICY_MODEL_KEY_NAME = "policy_model"
SKILLS_REF_KEY_NAME = "skills_ref"

_cached: DictConfig | None = None
_server_view: dict[str, Any] | None = None


def _host_port(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {"host": parts.hostname or "127.0.0.1", "port": parts.port or 80}


def remember_server_bootstrap(name: str, own_config: dict[str, Any], head_url: str, registry: list[Any]) -> None:
    """Called when a server process starts (NeMo Gym-style servers): what `get_global_config_dict`
    shows inside that process."""
    global _server_view, _cached
    view: dict[str, Any] = {HEAD_SERVER_KEY_NAME: _host_port(head_url)}
    for row in registry:
        if row.name not in view:
            view[row.name] = {row.server_type: {row.implementation: _host_port(row.url)}}
    own = view.get(name)
    if own is not None:
        (server_type,) = own
        (implementation,) = own[server_type]
        own[server_type][implementation] = own[server_type][implementation] | own_config
    _server_view, _cached = view, None


def _command_line_overrides() -> list[str]:
    # Only a command run with Hydra-style overrides has a config on its command line (pytest's own
    # arguments, for example, are not one).
    arguments = sys.argv[1:]
    return arguments if all("=" in argument and not argument.startswith("-") for argument in arguments) else []


def get_global_config_dict() -> DictConfig:
    """The global config of this process (see the module docstring); built once, then cached."""
    global _cached
    if _cached is None:
        if _server_view is not None:
            _cached = OmegaConf.create(_server_view)
        else:
            from nemo_gym.config import load_global_config

            _cached = load_global_config(_command_line_overrides()).raw
    return _cached


def get_hf_token() -> str | None:
    """The `hf_token` of the global config (`+hf_token=...` or env.yaml), as a benchmark's prepare script
    passes it to `datasets.load_dataset(..., token=...)`; None when not set."""
    token = get_global_config_dict().get(HF_TOKEN_KEY_NAME)
    return None if token is None else str(token)


def get_first_server_config_dict(global_config_dict: DictConfig | dict[str, Any], top_level_path: str) -> Any:
    """The block of server instance `top_level_path` (`<name>.<server_type>.<implementation>`)."""
    block: Any = global_config_dict.get(top_level_path) if hasattr(global_config_dict, "get") else None
    if block is None:
        raise UnknownServerError(f"no server instance named {top_level_path!r} in the config")
    for _ in range(2):
        block = next(iter(block.values()))
    return block
