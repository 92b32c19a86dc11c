"""`ng_reverify +input_jsonl_fpath=<rollouts> +output_jsonl_fpath=<new>`: score stored rollouts again.

Each row's stored response goes to its environment's `/verify` again (no model is called), and the
command prints how many rewards changed, per task. Servers: the ones already running behind the head
server, or `+config_paths=[...]` to start them for the run. The resources server that verifies a row
is found from the agent that collected it (the row's `agent_ref`, or `+agent_name=`): through the
agent's config when it is configured, else the only running resources server, else the one the agent
is named after (`<env>_simple_agent` -> `<env>`); `+resources_server_name=` overrides all of it.

Rows that belong to another environment than the one that would verify them are refused (exit 2,
naming the first such row) unless `+force=true`: verifying one environment's rollouts with another's
`/verify` gives rewards that mean nothing, and used to be reported as "N rewards changed".
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field
from tqdm import tqdm

from nemo_gym.aio import run_async
from nemo_gym.cli.head_probe import stack_to_use
from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.client import CONNECT_ONLY_RETRY, HttpClient, ServerClient, ServerInfo
from nemo_gym.config import GlobalConfig, find_project_root, load_global_config
from nemo_gym.errors import ConfigError, InputDataError, OutputExistsError, ServerUnreachableError, UnknownServerError
from nemo_gym.rollouts.reverify import Reverifier, RewardChanges, TaskRows, read_rollouts

RESOURCES_TYPE = "resources_servers"
AGENTS_TYPE = "responses_api_agents"
DEFAULT_PARALLEL = 64


class ReverifyConfig(BaseModel):
    """Send every stored rollout's response to its environment's /verify again (no model call) and
    write the re-scored rows; prints how many rewards changed, per task. For fixing a verifier
    without paying for generation again. Needs running servers (ng_run), or +config_paths=[...]."""

    input_jsonl_fpath: str = Field(description="Rollouts written by ng_collect_rollouts.")
    output_jsonl_fpath: str = Field(description="Where the re-verified rows are written.")
    config_paths: list[str] | None = Field(None, description="Start these servers if none are running.")
    agent_name: str | None = Field(
        None, description="Agent whose resources server verifies (default: each row's agent_ref)."
    )
    resources_server_name: str | None = Field(
        None, description="Resources server to verify with (overrides the agent's)."
    )
    tasks_jsonl_fpath: str | None = Field(
        None, description="Tasks the rollouts came from (default: <stem>_materialized_inputs.jsonl beside the input)."
    )
    num_samples_in_parallel: int | None = Field(None, ge=1, description=f"Rows in flight (null = {DEFAULT_PARALLEL}).")
    replay_tool_calls: bool = Field(
        True, description="Re-run the stored tool calls before verify, so stateful environments rebuild their state."
    )
    force: bool = Field(
        False,
        description="Verify rows with the chosen resources server even when their agent_ref says they belong to "
        "another environment (refused otherwise, naming the first such row), or when the environment says its "
        "rows cannot be re-verified (GET /reverify_mode answers 'unsupported').",
    )
    overwrite: bool = Field(False, description="Replace an existing output file.")
    startup_timeout_s: float = Field(
        60.0, gt=0, description="Seconds servers get to become healthy (with config_paths)."
    )


def resources_of_agent(agent: str, config: GlobalConfig, registry: dict[str, ServerInfo]) -> str:
    """The resources server an agent verifies with (see the module docstring for the order)."""
    configured = {instance.name: instance for instance in config.instances}
    if agent in configured and configured[agent].server_type == AGENTS_TYPE:
        ref = config.server_config_dict(agent).get("resources_server")
        if isinstance(ref, dict) and ref.get("name"):
            return str(ref["name"])
    running = sorted(name for name, info in registry.items() if info.server_type == RESOURCES_TYPE)
    if len(running) == 1:
        return running[0]
    for suffix in ("_simple_agent", "_agent"):
        if agent.endswith(suffix) and agent[: -len(suffix)] in running:
            return agent[: -len(suffix)]
    raise UnknownServerError(
        f"cannot tell which resources server verifies the rollouts of agent {agent!r} (running resources servers: "
        f"{', '.join(running) or 'none'}); pass +resources_server_name=<name>, or +config_paths=[...] with the "
        f"agent's config"
    )


def known_environments(config: GlobalConfig, registry: dict[str, ServerInfo] | None = None) -> set[str]:
    """Names that are environments for sure: the project's `resources_servers/<env>/` folders, the configured
    resources servers and (once asked) the running ones."""
    folder = find_project_root() / RESOURCES_TYPE
    names = {path.name for path in folder.iterdir() if (path / "configs").is_dir()} if folder.is_dir() else set()
    names |= {instance.name for instance in config.instances if instance.server_type == RESOURCES_TYPE}
    names |= {name for name, info in (registry or {}).items() if info.server_type == RESOURCES_TYPE}
    return names


def environment_of_agent(agent: str, config: GlobalConfig, environments: set[str]) -> str | None:
    """The environment (resources server instance) whose rollouts `agent` collects, or None when nothing says.

    A row names who produced it only through `agent_ref` (the collector stamps it on every row; NeMo Gym's
    rows carry the same): no row field names the resources server. So the environment is the agent's:
      1. the agent's own `resources_server` ref, when the merged config (config_paths, env.yaml) configures
         the agent: exact;
      2. else its name, when that is `<env>_simple_agent` (or `<env>_agent`) for a known environment `<env>`
         (`known_environments`): every shipped and scaffolded config names its agent so, and requiring `<env>`
         to exist keeps an agent merely called `my_agent` from being claimed by a made-up environment `my`.
    Other signals were weighed and left out: a row's extra task fields (`expected_answer`, ...) are shared
    by many environments and vary per row, so they identify nothing; a verify model that rejects unknown
    fields would refuse some foreign rows, but most accept extras (NeMo Gym's base verify request does),
    which is how foreign rows got re-scored silently; and the head server lists names and kinds, never an
    agent's refs.
    """
    configured = {instance.name: instance for instance in config.instances}
    if agent in configured and configured[agent].server_type == AGENTS_TYPE:
        ref = config.server_config_dict(agent).get("resources_server")
        if isinstance(ref, dict) and ref.get("name"):
            return str(ref["name"])
    for suffix in ("_simple_agent", "_agent"):
        if agent.endswith(suffix) and agent[: -len(suffix)] in environments:
            return agent[: -len(suffix)]
    return None


def refuse_foreign_rows(
    source: Path,
    first_line_of_agent: dict[str, int],
    verifier_of: Callable[[str], str],
    config: GlobalConfig,
    environments: set[str],
) -> None:
    """InputDataError naming the first row (file order) whose agent's environment is not the resources
    server that would verify it; rows whose environment cannot be told are let through."""
    foreign = []
    for agent, line in first_line_of_agent.items():
        owner, verifier = environment_of_agent(agent, config, environments), verifier_of(agent)
        if owner is not None and owner != verifier:
            foreign.append((line, agent, owner, verifier))
    if not foreign:
        return
    line, agent, owner, verifier = min(foreign)
    refused = InputDataError(
        f"agent_ref.name: this row was collected by {agent!r} for environment {owner!r}, not {verifier!r} that "
        f"would verify it; its reward there would mean nothing. Verify it with its own resources server, or pass "
        f"+force=true",
        path=str(source),
        line=line,
    )
    refused.field = "agent_ref.name"  # already leads the message: `file:line: field: what is wrong`
    raise refused


def build_resolver(
    params: ReverifyConfig,
    config: GlobalConfig,
    registry: dict[str, ServerInfo],
    agents_in_rows: set[str],
    rows_without_agent: int,
) -> Callable[[dict[str, Any]], str]:
    """row -> the resources server instance that verifies it; every name checked against the registry now."""
    names: dict[str | None, str]
    if params.resources_server_name:
        names = {None: params.resources_server_name}
    elif params.agent_name:
        names = {None: resources_of_agent(params.agent_name, config, registry)}
    else:
        names = {agent: resources_of_agent(agent, config, registry) for agent in sorted(agents_in_rows)}
        if rows_without_agent:
            running = sorted(name for name, info in registry.items() if info.server_type == RESOURCES_TYPE)
            if len(running) != 1:
                raise ConfigError(
                    f"{rows_without_agent} rows have no agent_ref; pass +agent_name= or "
                    f"+resources_server_name= (running resources servers: {', '.join(running) or 'none'})"
                )
            names[None] = running[0]
    for name in set(names.values()):
        info = registry.get(name)
        if info is None or info.server_type != RESOURCES_TYPE:
            running = sorted(n for n, i in registry.items() if i.server_type == RESOURCES_TYPE)
            raise UnknownServerError(
                f"no resources server named {name!r} is running "
                f"(running resources servers: {', '.join(running) or 'none'})"
            )
    if None in names and len(names) == 1:
        only = names[None]
        return lambda row: only

    def resolve(row: dict[str, Any]) -> str:
        ref = row.get("agent_ref")
        agent = ref.get("name") if isinstance(ref, dict) else None
        return names.get(agent) or names[None]

    return resolve


async def check_reverify_modes(server_client: ServerClient, servers: list[str], *, force: bool) -> None:
    """Ask each resources server's GET /reverify_mode (NeMo Gym's environments declare it): 'unsupported'
    means verify needs state the rollout itself built, so a re-verified reward may be wrong; refused
    unless +force=true, then said on stderr. A server without the route (ours), or one answering
    'stateless' or 'unknown', is re-verified: NeMo Gym also refuses 'unknown', the default of every
    environment that does not declare a mode, but here the stored tool calls are replayed
    (`replay_tool_calls`), which rebuilds the state most environments keep."""
    unsupported = []
    for name in servers:
        answer = await server_client.get(name, "/reverify_mode", retry=CONNECT_ONLY_RETRY)
        if answer.ok and answer.body.strip() == b'"unsupported"':  # the JSON string NeMo Gym's enum answers
            unsupported.append(name)
    if not unsupported:
        return
    which = ", ".join(unsupported)
    if not force:
        raise ConfigError(
            f"resources server(s) {which} answer reverify_mode 'unsupported': their verify needs state from the "
            f"rollout itself, so re-verified rewards may be wrong; pass +force=true to re-verify anyway"
        )
    print(
        f"Warning: resources server(s) {which} answer reverify_mode 'unsupported'; re-verified rewards may be wrong.",
        file=sys.stderr,
        flush=True,
    )


def reverify(argv: list[str]) -> int:
    config = load_global_config(argv)
    params: ReverifyConfig = read_command_config(ReverifyConfig, config, "ng_reverify")
    source, target = Path(params.input_jsonl_fpath), Path(params.output_jsonl_fpath)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise ConfigError("+output_jsonl_fpath must differ from +input_jsonl_fpath: the stored rows are the evidence")
    if target.exists() and target.stat().st_size > 0 and not params.overwrite:
        raise OutputExistsError(f"{target} already exists; pass +overwrite=true to replace it")

    # Check every row before anything is sent, and learn which agents collected them (and where each first appears).
    first_line_of_agent: dict[str, int] = {}
    rows_without_agent = total = 0
    for line, row in read_rollouts(source):
        total += 1
        ref = row.get("agent_ref")
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            first_line_of_agent.setdefault(ref["name"], line)
        else:
            rows_without_agent += 1
    task_rows = _task_rows(params, source)
    if params.resources_server_name and not params.force:
        # Known before any server is started or asked: refuse now. Other choices are checked once resolved.
        only = params.resources_server_name
        refuse_foreign_rows(source, first_line_of_agent, lambda agent: only, config, known_environments(config))

    with ExitStack() as cleanup:
        config, running = stack_to_use(config, argv, lambda text: print(text, file=sys.stderr, flush=True))
        if running is None:
            if not config.instances:
                raise ServerUnreachableError(
                    f"cannot reach the head server at {config.head_url}: start the servers with ng_run, "
                    f"or pass +config_paths=[...] to start them for this run"
                )
            from nemo_gym.launcher import LaunchOptions, Stack

            print(f"Starting {len(config.instances)} servers for this run...", file=sys.stderr, flush=True)
            stack = Stack(config, LaunchOptions(startup_timeout_s=params.startup_timeout_s))
            stack.start()
            cleanup.callback(stack.stop)
        return run_async(
            _reverify(params, config, source, target, task_rows, first_line_of_agent, rows_without_agent, total)
        )


def _task_rows(params: ReverifyConfig, source: Path) -> TaskRows | None:
    if params.tasks_jsonl_fpath:
        path = Path(params.tasks_jsonl_fpath)
        if not path.is_file():
            raise InputDataError("tasks file does not exist", path=str(path))
        return TaskRows.tasks(path)
    materialized = source.with_name(f"{source.stem}_materialized_inputs.jsonl")
    return TaskRows.materialized(materialized) if materialized.is_file() else None


async def _reverify(
    params: ReverifyConfig,
    config: GlobalConfig,
    source: Path,
    target: Path,
    task_rows: TaskRows | None,
    first_line_of_agent: dict[str, int],
    rows_without_agent: int,
    total: int,
) -> int:
    server_client = ServerClient(config.head_url, HttpClient())
    try:
        registry = await server_client.registry()
        resolve = build_resolver(params, config, registry, set(first_line_of_agent), rows_without_agent)
        if not params.force:
            # Before the output is opened: a refused run writes nothing.
            refuse_foreign_rows(
                source,
                first_line_of_agent,
                lambda agent: resolve({"agent_ref": {"name": agent}}),
                config,
                known_environments(config, registry),
            )
        servers = {resolve({"agent_ref": {"name": agent}}) for agent in first_line_of_agent}
        if rows_without_agent:
            servers.add(resolve({}))
        await check_reverify_modes(server_client, sorted(servers), force=params.force)
        reverifier = Reverifier(
            server_client,
            resolve,
            task_rows=task_rows,
            concurrency=params.num_samples_in_parallel or DEFAULT_PARALLEL,
            replay_tool_calls=params.replay_tool_calls,
        )
        changes = RewardChanges()
        failures_path = target.with_name(f"{target.stem}_failures.jsonl")
        target.parent.mkdir(parents=True, exist_ok=True)
        failures_path.unlink(missing_ok=True)
        with (
            target.open("wb") as out,
            tqdm(total=total, desc="Re-verifying", file=sys.stderr, dynamic_ncols=True) as bar,
        ):
            async for outcome in reverifier.stream(read_rollouts(source)):
                changes.add(outcome)
                if outcome.ok:
                    out.write(orjson.dumps(outcome.row) + b"\n")
                else:
                    with failures_path.open("ab") as failures:
                        failures.write(orjson.dumps(outcome.failure_record()) + b"\n")
                bar.set_postfix(changed=changes.changed, failed=changes.failed, refresh=False)
                bar.update(1)
    finally:
        await server_client.aclose()
    print(changes.report(), flush=True)
    print(f"Rows: {target}" + (f"  Failures: {failures_path}" if changes.failed else ""), flush=True)
    if changes.failed and task_rows is None:
        print(
            f"These rows were sent without the task rows they were collected from (no "
            f"{source.stem}_materialized_inputs.jsonl beside {source}). If verify refused fields it adds itself, "
            f"pass +tasks_jsonl_fpath=<the tasks the collection ran on>.",
            file=sys.stderr,
            flush=True,
        )
    return 1 if changes.failed else 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_reverify", reverify, ReverifyConfig, argv)


if __name__ == "__main__":
    main()
