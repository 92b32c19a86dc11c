"""Turn CLI overrides, env.yaml and config_paths files into one validated global config.

Precedence, lowest to highest: YAML files named by `config_paths` (flattened post-order, so a
file that includes another overrides it and a later sibling overrides an earlier one) <
env.yaml < CLI overrides. Dicts deep-merge; lists are replaced. Interpolations (`${...}`) stay
unresolved in `GlobalConfig.raw` and are resolved per server by `server_config_dict`.

A top-level key whose value looks like `{<server_type>: {<impl>: {entrypoint: ..., ...}}}` is a
server instance. Everything that goes wrong is raised as one class from `nemo_gym.errors`, with
a one-line message that names the file, key or override at fault.

Modules: `_overrides` (CLI grammar), `_files` (YAML, env.yaml, includes), `_servers` (finding and
checking instances), `_ports` (addresses), `_loader` (the pipeline and GlobalConfig), `_sources`
(who set what), `_references` (`${...}` uses, and the error for an unset one), `_params` (every
command-line key must mean something), `_model_choice` (`+model=` picks the policy model server),
`_redact`.
"""

from nemo_gym.config._files import ENV_YAML, find_project_root
from nemo_gym.config._loader import GlobalConfig, load_global_config
from nemo_gym.config._overrides import parse_overrides
from nemo_gym.config._params import check_command_parameters
from nemo_gym.config._redact import REDACTED, redact, secret_values
from nemo_gym.config._schema import (
    DEFAULT_HEAD_PORT,
    DEFAULT_HOST,
    RESERVED_KEYS,
    SERVER_TYPES,
    Domain,
    HeadServerConfig,
    ServerInstance,
    SharedParameters,
)
from nemo_gym.config._sources import ConfigSources

__all__ = [
    "DEFAULT_HEAD_PORT",
    "DEFAULT_HOST",
    "ENV_YAML",
    "REDACTED",
    "RESERVED_KEYS",
    "SERVER_TYPES",
    "ConfigSources",
    "Domain",
    "GlobalConfig",
    "HeadServerConfig",
    "ServerInstance",
    "SharedParameters",
    "check_command_parameters",
    "find_project_root",
    "load_global_config",
    "parse_overrides",
    "redact",
    "secret_values",
]
