"""Scaffolds: new environment folders written from the template files in `templates/`."""

from nemo_gym.scaffold.resources_server import (
    check_name,
    collect_example_rollouts_command,
    scaffold_resources_server,
)

__all__ = ["check_name", "collect_example_rollouts_command", "scaffold_resources_server"]
