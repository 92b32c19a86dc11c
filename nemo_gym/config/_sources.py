"""Where each part of the merged config came from: the command line, env.yaml, or a config file.

Kept beside the merged result so that errors can say which file set a value, and so that the
unknown-parameter check can tell a key typed on the command line from one a shared file defines.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_gym.config._nodes import child_node

COMMAND_LINE = "the command line"


@dataclass(frozen=True)
class ConfigSources:
    """The unmerged inputs, lowest precedence first: `files` < `env` (env.yaml) < `cli`."""

    cli: DictConfig = field(default_factory=OmegaConf.create)
    env: DictConfig = field(default_factory=OmegaConf.create)
    env_path: pathlib.Path | None = None
    env_searched: tuple[pathlib.Path, ...] = ()
    files: tuple[tuple[pathlib.Path, DictConfig], ...] = ()

    def origin(self, dotted_key: str) -> str | None:
        """Who set `dotted_key` last (the one that wins): COMMAND_LINE, env.yaml's path, or a file's path."""
        layers = [(COMMAND_LINE, self.cli)]
        if self.env_path is not None:
            layers.append((str(self.env_path), self.env))
        layers.extend((str(path), cfg) for path, cfg in reversed(self.files))
        for name, cfg in layers:
            if _has_key(cfg, dotted_key):
                return name
        return None

    def shared_top_keys(self) -> set[str]:
        """Top-level keys that env.yaml or a config file defines: values shared by every command."""
        keys = {str(key) for key in self.env.keys()}
        for _, cfg in self.files:
            keys.update(str(key) for key in cfg.keys())
        return keys


def _has_key(cfg: DictConfig, dotted_key: str) -> bool:
    node: object = cfg
    for part in dotted_key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        try:
            node = child_node(node, part)
        except OmegaConfBaseException:
            return False
    return True
