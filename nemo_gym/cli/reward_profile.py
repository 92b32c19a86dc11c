"""`ng_reward_profile +materialized_inputs_jsonl_fpath=<run>_materialized_inputs.jsonl +rollouts_jsonl_fpath=<run>.jsonl`:
per-task and per-agent reward statistics of a finished collection, from its files alone (NeMo Gym's
`gym eval profile`; the work is in `nemo_gym.rollouts.reward_profiling`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import load_global_config
from nemo_gym.rollouts.reward_profiling import profile_files


class RewardProfileConfig(BaseModel):
    """Pair every rollout with its materialized input and write <rollouts stem>_reward_profiling.jsonl (per task:
    mean/max/min/median/std of every numeric field, the task's row, rollout counts and per-rollout infos) and
    <rollouts stem>_agent_metrics.json (the same per agent). Reads files only; no server is needed."""

    materialized_inputs_jsonl_fpath: str = Field(
        description="<run>_materialized_inputs.jsonl, written by ng_collect_rollouts beside its output."
    )
    rollouts_jsonl_fpath: str = Field(description="The rollouts written by ng_collect_rollouts.")
    allow_partial_rollouts: bool = Field(
        False, description="Profile the rollouts that finished when some inputs have none (a cut-short run)."
    )


def profile(argv: list[str]) -> int:
    params: RewardProfileConfig = read_command_config(
        RewardProfileConfig, load_global_config(argv), "ng_reward_profile"
    )
    summary = profile_files(
        Path(params.materialized_inputs_jsonl_fpath),
        Path(params.rollouts_jsonl_fpath),
        allow_partial=params.allow_partial_rollouts,
    )
    print(
        f"Reward profile completion: {summary.profiled_rollouts}/{summary.expected_rollouts} rollout rows "
        f"({summary.completion_pct:.2f}%)\n"
        f"Input rows: {summary.tasks} total; {summary.complete_tasks} complete; {summary.partial_tasks} partial; "
        f"{summary.tasks_without_rollouts} without rollouts dropped from output.\n"
        f"Reward profiling outputs: {summary.profile_path}\n"
        f"Agent-level metrics: {summary.agent_metrics_path}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_reward_profile", profile, RewardProfileConfig, argv)


if __name__ == "__main__":
    main()
