"""What every `ng_*` command shares: override parsing, `+help=true`, and errors -> one line + exit code.

Exit codes: 0 success, 1 runtime failure (a server died, rollouts failed), 2 bad input or config,
130 interrupted.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig
from pydantic import BaseModel, ValidationError

from nemo_gym.config import GlobalConfig, parse_overrides
from nemo_gym.errors import ConfigError, NemoGymError, exit_code_for


def wants_help(argv: list[str]) -> bool:
    try:
        overrides = parse_overrides(argv)
    except NemoGymError:
        return False
    return bool(overrides.get("help") or overrides.get("h"))


def help_text(command: str, model: type[BaseModel]) -> str:
    lines = [f"usage: {command} [+key=value ...]", "", (model.__doc__ or "").strip(), "", "parameters:"]
    for name, field in model.model_fields.items():
        required = field.is_required()
        default = "required" if required else f"default: {field.default!r}"
        description = (field.description or "").strip()
        lines.append(f"  +{name}=...  ({default})  {description}".rstrip())
    return "\n".join(lines)


def read_command_config(model: type[BaseModel], config: GlobalConfig, command: str) -> Any:
    """Validate the command's parameters (top-level keys of the merged config) into `model`."""
    values: dict[str, Any] = {}
    for name in model.model_fields:
        value = config.get(name, None)
        if isinstance(value, DictConfig):
            value = config.to_container(resolve=True).get(name)
        if value is not None:
            values[name] = value
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            if item["type"] == "missing":
                problems.append(f"+{key}=... is required")
            else:
                problems.append(f"+{key}: {item['msg']} (got {item.get('input')!r})")
        raise ConfigError(f"{command}: " + "; ".join(problems) + f" (see {command} +help=true)") from None


def run_command(command: str, body: Callable[[list[str]], int | None], help_model: type[BaseModel] | None = None,
                argv: list[str] | None = None) -> None:
    """Run a command body, turning known errors into one readable line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # A shell starting us in the background (`ng_run ... &` in a script) leaves SIGINT ignored;
    # restore Ctrl+C / `kill -INT` so they always stop the command cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if help_model is not None and wants_help(argv):
        print(help_text(command, help_model))
        sys.exit(0)
    try:
        code = body(argv) or 0
    except NemoGymError as error:
        print(f"{command}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(exit_code_for(error))
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(code)
