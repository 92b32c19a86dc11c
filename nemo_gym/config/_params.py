"""Every key typed on a command line must mean something: a typo is an error, never a silent no-op.

A top-level key given on the command line is accepted when it is
  * one of the command's own parameters (its pydantic model) or a key every command shares
    (`SharedParameters`: config_paths, head_server.*, ...), checked down to nested model fields;
  * `help` / `h`;
  * a server instance (its fields are checked by the server process itself, against the config
    class it validates them with: only that class knows them, and importing every server's code
    here would cost ng_run seconds of start-up);
  * a key env.yaml or a config file defines, or that some `${...}` reads (policy_base_url and
    friends): those files are shared by every command, so their keys cannot be judged by one.
Keys that only files define are not judged here, for the same reason.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from pydantic import BaseModel

from nemo_gym.config._references import referenced_top_keys
from nemo_gym.config._schema import SharedParameters
from nemo_gym.config._servers import find_candidates
from nemo_gym.errors import UnknownParameterError
from nemo_gym.unknown_keys import UnknownKey, declared_names, describe_unknown_keys, find_unknown_keys

if TYPE_CHECKING:
    from nemo_gym.config._loader import GlobalConfig

HELP_KEYS = ("help", "h")


def check_command_parameters(config: GlobalConfig, model: type[BaseModel]) -> None:
    """Raise UnknownParameterError (one line, with a did-you-mean) for a command-line key nothing reads."""
    container = OmegaConf.to_container(config.sources.cli, resolve=False)
    assert isinstance(container, dict)
    typed = {str(key): value for key, value in container.items()}
    own, shared = set(declared_names(model)), set(declared_names(SharedParameters))
    servers = {candidate.name for candidate in find_candidates(config.raw)}
    defined = config.sources.shared_top_keys() | referenced_top_keys(config.raw)

    unknown: list[UnknownKey] = []
    strays: list[str] = []
    for key, value in typed.items():
        if key in own:
            unknown += find_unknown_keys(model, {key: value})
        elif key in shared:
            unknown += find_unknown_keys(SharedParameters, {key: value})
        elif key not in HELP_KEYS and key not in servers and key not in defined:
            strays.append(key)
    if strays:
        known = [*declared_names(model), *(name for name in declared_names(SharedParameters) if name not in own)]
        candidates = known + sorted(servers | defined)
        for key in strays:
            close = difflib.get_close_matches(key, candidates, n=1)
            unknown.append(
                UnknownKey(_full_path(typed, key), _full_path(typed, key, close[0]) if close else None, tuple(known))
            )
    if unknown:
        raise UnknownParameterError(describe_unknown_keys(unknown))


def _full_path(typed: dict[str, Any], key: str, replacement: str | None = None) -> str:
    """`key` with the rest of the dotted path the user typed, when it is one chain (`policy_modle.x.y`)."""
    parts = [replacement or key]
    node = typed.get(key)
    while isinstance(node, dict) and len(node) == 1:
        child = next(iter(node))
        parts.append(str(child))
        node = node[child]
    return ".".join(parts)
