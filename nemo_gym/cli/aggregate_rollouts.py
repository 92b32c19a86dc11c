"""`ng_aggregate_rollouts +input_glob='results/run-shard*.jsonl' +output_jsonl_fpath=results/run.jsonl`:
merge rollout shards (collected with `+disable_aggregation=true`) and ask each agent's
`/aggregate_metrics` over all of them at once (NeMo Gym's `gym eval aggregate`).

The environment's metrics (pass@k and the like) need every rollout of a task together, so shards are
aggregated after the fact: the rows are read from every matching file, sorted by (task, rollout),
written to the output (unless `+merge_shards=false`) and posted, grouped by their `agent_ref`, to
the running agents; the answers go to `<output stem>_aggregate_metrics.json`, as a collection
writes them. Servers: the ones running behind the head server, or `+config_paths=[...]` to start
them for the command.
"""

from __future__ import annotations

import glob
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field

from nemo_gym.aio import run_async
from nemo_gym.cli.head_probe import stack_to_use
from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.client import ServerClient
from nemo_gym.config import load_global_config
from nemo_gym.errors import InputDataError, OutputExistsError, OutputIsInputError, ServerUnreachableError
from nemo_gym.rollouts.aggregate_metrics import (
    AggregateMetricsOutcome,
    format_environment_key_metrics,
    write_aggregate_metrics,
)
from nemo_gym.rollouts.output_lock import how_one_file


class AggregateRolloutsConfig(BaseModel):
    """Read every rollout file matching input_glob (a glob, or several separated by commas), write them merged
    to output_jsonl_fpath sorted by (task, rollout), and write <output stem>_aggregate_metrics.json from the
    agents' /aggregate_metrics over all rows at once (each row goes to the agent its agent_ref names). Needs
    running servers (ng_run), or +config_paths=[...] to start them."""

    input_glob: str = Field(description="Glob(s) of the shards, comma-separated; each file is read once.")
    output_jsonl_fpath: str = Field(
        description="The merged rollouts; the metrics file is <stem>_aggregate_metrics.json beside it."
    )
    merge_shards: bool = Field(True, description="Write the merged rows (false: only the metrics file).")
    overwrite: bool = Field(False, description="Replace an existing merged output file.")
    config_paths: list[str] | None = Field(None, description="Start these servers if none are running.")
    startup_timeout_s: float = Field(
        60.0, gt=0, description="Seconds servers get to become healthy (with config_paths)."
    )


def expand_input_glob(input_glob: str) -> list[Path]:
    """Every file the comma-separated globs match, each pattern's matches sorted, each file once."""
    found: dict[str, None] = {}
    for pattern in (part.strip() for part in input_glob.split(",")):
        for match in sorted(glob.glob(os.path.expanduser(pattern))):
            if Path(match).is_file():
                found.setdefault(os.path.realpath(match), None)
    return [Path(path) for path in found]


def _read_rows(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    row = orjson.loads(raw)
                except orjson.JSONDecodeError as error:
                    raise InputDataError(f"not valid JSON ({error})", path=str(path), line=number) from None
                if not isinstance(row, dict):
                    raise InputDataError("expected a JSON object (a rollout row)", path=str(path), line=number)
                rows.append(row)

    def order(row: dict[str, Any]) -> tuple[int, int]:
        task, rollout = row.get("_ng_task_index"), row.get("_ng_rollout_index")
        return (task if isinstance(task, int) else -1, rollout if isinstance(rollout, int) else -1)

    return sorted(rows, key=order)


async def _aggregate(head_url: str, rows: list[dict[str, Any]], output: Path) -> AggregateMetricsOutcome:
    client = ServerClient(head_url)
    try:
        return await write_aggregate_metrics(client, rows, output)
    finally:
        await client.aclose()


def aggregate(argv: list[str]) -> int:
    config = load_global_config(argv)
    params: AggregateRolloutsConfig = read_command_config(AggregateRolloutsConfig, config, "ng_aggregate_rollouts")
    inputs = expand_input_glob(params.input_glob)
    if not inputs:
        raise InputDataError(f"+input_glob={params.input_glob!r} matches no file")
    output = Path(params.output_jsonl_fpath)
    for shard in inputs:
        if how_one_file(shard, output):
            raise OutputIsInputError(
                f"+output_jsonl_fpath={output} is one of the shards +input_glob matches; choose another path",
                path=str(output),
                input_path=str(shard),
            )
    if params.merge_shards and output.exists() and not params.overwrite:
        raise OutputExistsError(f"{output} already exists; pass +overwrite=true to replace it")
    print(f"Aggregating {len(inputs)} shard(s):", *(f"  - {path}" for path in inputs), sep="\n", flush=True)
    rows = _read_rows(inputs)
    print(f"Loaded {len(rows)} rollout rows", flush=True)
    if params.merge_shards:
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_name(output.name + ".tmp")
        temporary.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        os.replace(temporary, output)
        print(f"Merged rollouts: {output}", flush=True)

    with ExitStack() as cleanup:
        config, running = stack_to_use(config, argv, lambda text: print(text, file=sys.stderr, flush=True))
        if running is None:
            if not config.instances:
                raise ServerUnreachableError(
                    f"cannot reach the head server at {config.head_url}: start the servers with ng_run, "
                    f"or pass +config_paths=[...] to start them for this command",
                    connect_failed=True,
                )
            from nemo_gym.cli.stacks import new_stack
            from nemo_gym.launcher import LaunchOptions

            stack = new_stack(config, LaunchOptions(startup_timeout_s=params.startup_timeout_s), None)
            stack.check_ports()
            print(f"Starting {len(config.instances)} servers...", file=sys.stderr, flush=True)
            stack.start()
            cleanup.callback(stack.stop)
        outcome = run_async(_aggregate(config.head_url, rows, output))

    for agent, key_metrics in outcome.key_metrics.items():
        print(f"Key metrics for {agent}: {format_environment_key_metrics(key_metrics)}", flush=True)
    for error in outcome.errors:
        print(error, file=sys.stderr, flush=True)
    if outcome.path is not None:
        print(f"Aggregate metrics: {outcome.path}", flush=True)
    elif not outcome.errors:
        print("No aggregate metrics: no row names an agent that offers /aggregate_metrics", file=sys.stderr)
    return 1 if outcome.errors else 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_aggregate_rollouts", aggregate, AggregateRolloutsConfig, argv)


if __name__ == "__main__":
    main()
