"""What every `ng_*` command shares: override parsing, `+help=true`, and errors -> one line + exit code.

Exit codes: 0 success, 1 runtime failure (a server died, rollouts failed), 2 bad input or config,
130 interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig
from pydantic import BaseModel, ValidationError

from nemo_gym.config import GlobalConfig, SharedParameters, check_command_parameters, parse_overrides
from nemo_gym.errors import ConfigError, NemoGymError, exit_code_for

HELP_FLAGS = ("--help", "-h")


def wants_help(argv: list[str]) -> bool:
    """`--help`, `-h`, `+help=true` or `+h=true` anywhere on the command line."""
    if any(arg in HELP_FLAGS for arg in argv):
        return True
    try:
        overrides = parse_overrides(argv)
    except NemoGymError:
        return False
    return bool(overrides.get("help") or overrides.get("h"))


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _parameter_lines(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(+name, default, description) for every field; fields that are models list their own fields."""
    rows = []
    for attribute, field in model.model_fields.items():
        name = field.alias or attribute  # the key users type (`+json=true` for a field that cannot be called json)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _parameter_lines(annotation, f"{prefix}{name}.")
            continue
        default = (
            "required" if field.is_required() else f"default: {_shown(field.get_default(call_default_factory=True))}"
        )
        rows.append((f"+{prefix}{name}", default, " ".join((field.description or "").split())))
    return rows


def help_text(command: str, model: type[BaseModel]) -> str:
    """Usage, the command's docstring, and every parameter with its default (shared ones listed after)."""
    own = _parameter_lines(model)
    own_names = {row[0] for row in own}
    shared = [row for row in _parameter_lines(SharedParameters) if row[0] not in own_names]
    width = max(len(name) for name, _, _ in own + shared)
    default_width = max(len(default) for _, default, _ in own + shared)

    def table(rows: list[tuple[str, str, str]]) -> list[str]:
        return [
            f"  {name.ljust(width)}  {default.ljust(default_width)}  {text}".rstrip() for name, default, text in rows
        ]

    doc = " ".join((model.__doc__ or "").split())
    return "\n".join(
        [
            f"usage: {command} [+key=value ...]",
            "",
            doc,
            "",
            "parameters:",
            *table(own),
            "",
            "shared by every command:",
            *table(shared),
            "",
            "Server settings: +<instance>.<server_type>.<implementation>.<field>=<value> (see ng_dump_config).",
            "Values also come from env.yaml and the config files; the command line wins.",
        ]
    )


def read_command_config(model: type[BaseModel], config: GlobalConfig, command: str) -> Any:
    """Validate the command's parameters (top-level keys of the merged config) into `model`.

    First, every key typed on the command line must mean something to this command (its own
    parameters, the shared keys, a server instance, or a value env.yaml / a config file / a
    `${...}` uses): a typo such as `+num_repeat=2` is an error, never a silent default.
    """
    check_command_parameters(config, model)
    values: dict[str, Any] = {}
    for attribute, field in model.model_fields.items():
        name = field.alias or attribute
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
        # run_command already starts the line with "<command>: error:"; the --help hint names it once more.
        raise ConfigError("; ".join(problems) + f" (see {command} --help)") from None


def run_command(
    command: str,
    body: Callable[[list[str]], int | None],
    help_model: type[BaseModel] | None = None,
    argv: list[str] | None = None,
) -> None:
    """Run a command body, turning known errors into one readable line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # A shell starting us in the background (`ng_run ... &` in a script) leaves SIGINT ignored;
    # restore Ctrl+C / `kill -INT` so they always stop the command cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if help_model is not None and wants_help(argv):
            print(help_text(command, help_model), flush=True)
            sys.exit(0)
        code = body(argv) or 0
    except BrokenPipeError:
        # `ng_* --help | head` closed our stdout early: that is the reader's choice, not an error worth a
        # traceback. Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except NemoGymError as error:
        print(f"{command}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(exit_code_for(error))
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(code)
