"""`gym` / `ng`: NeMo Gym 0.7's command router (`gym env start`, `gym eval run`, ...) onto our `ng_*` commands.

NeMo Gym 0.7 turned its `ng_*` commands into `gym <group> <action>` with `--flags`; both spellings
work here. The router translates the flags into the `+key=value` parameters of the `ng_*` command
that does the job and runs it; `+key=value` parameters pass through unchanged, so everything the
`ng_*` command accepts works after `gym ...` too. `gym <group> <action> --help` prints the flags,
then that command's own help.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nemo_gym.config import find_project_root
from nemo_gym.errors import ConfigError, ConfigOverrideError, NemoGymError, exit_code_for


@dataclass(frozen=True)
class Flag:
    """`--name VALUE` (or a switch) and the `+key=value` it becomes."""

    names: tuple[str, ...]
    key: str
    help: str
    switch: bool = False
    to_override: Callable[[str], str] | None = None
    """Builds the override from the value (default: `+<key>=<value>`)."""

    def override(self, value: str) -> str:
        if self.to_override is not None:
            return self.to_override(value)
        return f"+{self.key}=true" if self.switch else f"+{self.key}={value}"


# NeMo Gym's named configs: flag -> (folder, configs subfolder, default file stem; None = the name itself).
# `NAME` or `NAME/flavor` -> `<folder>/NAME/[<subfolder>/]<flavor or default>.yaml`.
_ASSETS: dict[str, tuple[str, str, str | None]] = {
    "resources-server": ("resources_servers", "configs", None),
    "model-type": ("responses_api_models", "configs", None),
    "benchmark": ("benchmarks", "", "config"),
    "environment": ("environments", "", "config"),
}


def _config_of(flag: str) -> Callable[[str], str]:
    """`--<flag> NAME[/flavor]` -> `+config_paths=[<its config file>]`, found from the working directory
    or the project root, as NeMo Gym resolves it; a name with no config file is one line naming it."""
    folder, subfolder, default_stem = _ASSETS[flag]

    def path(value: str) -> str:
        name, _, flavor = value.partition("/")
        stem = flavor or default_stem or name
        candidates = [f"{folder}/{name}/{subfolder}/{stem}.yaml" if subfolder else f"{folder}/{name}/{stem}.yaml"]
        if flavor and not subfolder:
            candidates.insert(0, f"{folder}/{value}/config.yaml")  # a benchmark nested under a group folder
        for relative in candidates:
            if Path(relative).is_file() or (find_project_root() / relative).is_file():
                return f"+config_paths=[{relative}]"
        raise ConfigError(f"--{flag} {value}: no config file {candidates[-1]}")

    return path


def _no_search_dirs(value: str) -> str:
    raise ConfigError(
        f"--search-dir {value}: extra component roots are not supported here; "
        f"pass the configs with --config PATH (or +config_paths=[...])"
    )


CONFIG = Flag(
    ("--config",), "config_paths", "Config file to load; repeatable.", to_override=lambda v: f"+config_paths=[{v}]"
)
RESOURCES_SERVER_CONFIG = Flag(
    ("--resources-server",), "config_paths", "Load resources_servers/NAME/configs/NAME.yaml.",
    to_override=_config_of("resources-server"),
)  # fmt: skip
MODEL_TYPE = Flag(
    ("--model-type",), "config_paths", "Load responses_api_models/NAME/configs/NAME.yaml.",
    to_override=_config_of("model-type"),
)  # fmt: skip
BENCHMARK = Flag(
    ("--benchmark",), "config_paths", "Load benchmarks/NAME/config.yaml (NAME/flavor: that file).",
    to_override=_config_of("benchmark"),
)  # fmt: skip
ENVIRONMENT = Flag(
    ("--environment",), "config_paths", "Load environments/NAME/config.yaml (NAME/flavor: that file).",
    to_override=_config_of("environment"),
)  # fmt: skip
SEARCH_DIR = Flag(
    ("--search-dir",), "", "NeMo Gym's extra component roots: not supported here (an error).",
    to_override=_no_search_dirs,
)  # fmt: skip
ENTRYPOINT = Flag(
    ("--resources-server",), "entrypoint", "The resources server (resources_servers/NAME).",
    to_override=lambda v: f"+entrypoint=resources_servers/{v}",
)  # fmt: skip
MODEL = (
    Flag(("--model", "-m"), "policy_model_name", "Model name."),
    Flag(("--model-url",), "policy_base_url", "Model server base URL."),
    Flag(("--model-api-key",), "policy_api_key", "Model server API key."),
)
JSON = Flag(("--json",), "json", "Print JSON.", switch=True)


@dataclass(frozen=True)
class Command:
    module: str
    """`nemo_gym.cli.<module>`, whose `main(argv)` runs the command."""
    summary: str
    flags: tuple[Flag, ...] = ()
    ours: str = ""
    """The `ng_*` name of the command."""
    choose: Callable[[list[str]], str] | None = field(default=None)
    """Picks another module from the translated parameters (`gym env test` with or without a server)."""


def _test_module(overrides: list[str]) -> str:
    return "env_test" if any(o.lstrip("+").startswith("entrypoint=") for o in overrides) else "env_test_all"


COMMANDS: dict[str, Command] = {
    "env start": Command(
        "run",
        "Start the servers.",
        (CONFIG, BENCHMARK, ENVIRONMENT, RESOURCES_SERVER_CONFIG, MODEL_TYPE, *MODEL),
        "ng_run",
    ),
    "env test": Command(
        "env_test",
        "Test one server (--resources-server / +entrypoint) or every folder.",
        (ENTRYPOINT,),
        "ng_test / ng_test_all",
        choose=_test_module,
    ),
    "env init": Command(
        "init_resources_server", "Scaffold a resources server.", (ENTRYPOINT,), "ng_init_resources_server"
    ),
    "env resolve": Command("dump_config", "Print the merged, resolved config.", (CONFIG,), "ng_dump_config"),
    "env status": Command("status", "Show the running servers and their health.", (JSON,), "ng_status"),
    "eval run": Command(
        "collect",
        "Collect rollouts (starts the configured servers when none run; --no-serve: use the running ones).",
        (
            CONFIG,
            BENCHMARK,
            ENVIRONMENT,
            RESOURCES_SERVER_CONFIG,
            MODEL_TYPE,
            SEARCH_DIR,
            *MODEL,
            Flag(("--no-serve",), "no_serve", "Use the running servers; never start the configured ones.", switch=True),
            Flag(("--resume",), "resume_from_cache", "Resume an interrupted run.", switch=True),
            Flag(("--agent", "-a"), "agent_name", "Agent for rows without an agent_ref."),
            Flag(("--input", "-i"), "input_jsonl_fpath", "Input tasks JSONL."),
            Flag(("--output", "-o"), "output_jsonl_fpath", "Output rollouts JSONL."),
            Flag(("--limit",), "limit", "Use only the first N tasks."),
            Flag(("--num-repeats",), "num_repeats", "Rollouts per task."),
            Flag(("--prompt-config",), "prompt_config", "Prompt YAML that builds each input."),
            Flag(("--concurrency",), "num_samples_in_parallel", "Rollouts in flight."),
            Flag(("--split",), "split", "Collate the config's train, validation or benchmark sets; run on that one."),
            Flag(("--temperature",), "responses_create_params.temperature", "Sampling temperature."),
            Flag(("--top-p",), "responses_create_params.top_p", "Nucleus sampling top-p."),
            Flag(("--max-output-tokens",), "responses_create_params.max_output_tokens", "Maximum output tokens."),
            Flag(("--disable-aggregation",), "disable_aggregation", "Skip the metrics (shards).", switch=True),
        ),  # fmt: skip
        "ng_collect_rollouts",
    ),
    "eval aggregate": Command(
        "aggregate_rollouts",
        "Merge rollout shards and compute the environment's aggregate metrics.",
        (
            CONFIG,
            Flag(("--input-glob", "-i"), "input_glob", "Glob(s) of the shards, comma-separated."),
            Flag(("--output", "-o"), "output_jsonl_fpath", "The merged rollouts file."),
        ),
        "ng_aggregate_rollouts",
    ),
    "eval reverify": Command(
        "reverify",
        "Score stored rollouts again with the environment's /verify.",
        (
            CONFIG,
            RESOURCES_SERVER_CONFIG,
            Flag(("--rollouts",), "input_jsonl_fpath", "Rollouts JSONL to re-verify."),
            Flag(("--inputs",), "tasks_jsonl_fpath", "The tasks the rollouts came from."),
            Flag(("--output", "-o"), "output_jsonl_fpath", "Where re-verified rows go."),
            Flag(("--concurrency",), "num_samples_in_parallel", "Rows in flight."),
            Flag(("--force",), "force", "Verify rows of another environment anyway.", switch=True),
            Flag(("--overwrite",), "overwrite", "Replace an existing output file.", switch=True),
        ),
        "ng_reverify",
    ),
    "eval profile": Command(
        "reward_profile",
        "Per-task and per-agent reward statistics of a finished run.",
        (
            Flag(("--inputs",), "materialized_inputs_jsonl_fpath", "<run>_materialized_inputs.jsonl."),
            Flag(("--rollouts",), "rollouts_jsonl_fpath", "The rollouts JSONL."),
        ),
        "ng_reward_profile",
    ),
    "dataset collate": Command(
        "prepare_data",
        "Validate the config's data sets, write their metrics and collate them per type.",
        (
            CONFIG,
            RESOURCES_SERVER_CONFIG,
            MODEL_TYPE,
            Flag(("--mode",), "mode", "train_preparation or example_validation."),
            Flag(("--output-dir",), "output_dirpath", "Folder for the collated files."),
            Flag(("--download",), "should_download", "Download missing sets (not supported here).", switch=True),
        ),
        "ng_prepare_data",
    ),
    "dataset render": Command(
        "materialize_prompts",
        "Build every row's input from a prompt file.",
        (
            Flag(("--input", "-i"), "input_jsonl_fpath", "Raw rows JSONL."),
            Flag(("--prompt-config",), "prompt_config", "The prompt YAML."),
            Flag(("--output", "-o"), "output_jsonl_fpath", "Output JSONL."),
        ),
        "ng_materialize_prompts",
    ),
    "list environments": Command("list_environments", "List the environments here.", (), "ng_list_environments"),
    "version": Command("version", "Show the version and the machine.", (JSON,), "ng_version"),
}


def _merge_config_paths(overrides: list[str]) -> list[str]:
    """All `+config_paths=[...]` (from flags and typed ones) as one override: Hydra refuses a key twice."""
    paths: list[str] = []
    rest: list[str] = []
    for token in overrides:
        head, _, value = token.partition("=")
        if head.lstrip("+") == "config_paths" and value.startswith("[") and value.endswith("]"):
            paths += [part.strip() for part in value[1:-1].split(",") if part.strip()]
        elif token:
            rest.append(token)
    return ([f"+config_paths=[{','.join(paths)}]"] if paths else []) + rest


def translate(command: Command, args: list[str]) -> list[str]:
    """The `+key=value` parameters for the `ng_*` command: flags translated, overrides passed through."""
    by_name = {name: flag for flag in command.flags for name in flag.names}
    overrides: list[str] = []
    position = 0
    while position < len(args):
        token = args[position]
        position += 1
        if not token.startswith("-") or token in ("--help", "-h"):
            overrides.append(token)
            continue
        name, has_value, value = token.partition("=")
        flag = by_name.get(name)
        if flag is None:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; flags: {', '.join(by_name) or 'none'}"
            raise ConfigOverrideError(f"unknown flag {name}{hint} (parameters are +key=value)")
        if not flag.switch and not has_value:
            if position >= len(args):
                raise ConfigOverrideError(f"{name} needs a value")
            value = args[position]
            position += 1
        overrides.append(flag.override(value))
    return _merge_config_paths(overrides)


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: gym <group> <action> [--flag value ...] [+key=value ...]   (also: ng ...)",
        "",
        "NeMo Gym 0.7's commands, each run by this toolkit's ng_* command:",
    ]
    lines += [f"  {name.ljust(width)}  {cmd.ours:26} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "gym --version [--json] is ng_version. `gym <group> <action> --help` shows a command's flags."]
    return "\n".join(lines)


def _flags_help(name: str, command: Command) -> str:
    lines = [f"gym {name}: {command.summary} (runs {command.ours})", "flags:"]
    for flag in command.flags:
        lines.append(f"  {', '.join(flag.names):28} {flag.help}" + ("" if flag.switch else f"  (+{flag.key})"))
    return "\n".join(lines) + "\n"


def resolve(argv: list[str]) -> tuple[str, Command, list[str]]:
    """(command name, command, remaining arguments) for the command line."""
    if argv[:1] == ["--version"]:
        return "version", COMMANDS["version"], argv[1:]
    words = [token for token in argv[:2] if not token.startswith(("-", "+"))]
    for count in (2, 1):
        name = " ".join(words[:count])
        if len(words) >= count and name in COMMANDS:
            return name, COMMANDS[name], argv[count:]
    typed = " ".join(words) or (argv[0] if argv else "")
    close = difflib.get_close_matches(typed, list(COMMANDS), n=1)
    hint = f"; did you mean `gym {close[0]}`?" if close else "; run `gym --help` for the list"
    raise ConfigError(f"unknown command `gym {typed}`{hint}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("--help", "-h", "help"):
        print(_usage(), flush=True)
        sys.exit(0 if argv else 2)
    try:
        name, command, rest = resolve(argv)
        overrides = translate(command, rest)
        module = command.choose(overrides) if command.choose else command.module
    except NemoGymError as error:
        print(f"gym: error: {error}", file=sys.stderr, flush=True)
        sys.exit(exit_code_for(error))
    if any(token in ("--help", "-h") for token in overrides):
        print(_flags_help(name, command), flush=True)
    target = importlib.import_module(f"nemo_gym.cli.{module}")
    target.main(overrides)


if __name__ == "__main__":
    main()
