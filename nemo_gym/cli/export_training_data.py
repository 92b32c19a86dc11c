"""`ng_export_training_data +input_jsonl_fpath=<rollouts> +output_jsonl_fpath=<out> +format=<trl|verl|nemo_rl|skyrl|messages>`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import load_global_config
from nemo_gym.errors import ConfigError, OutputExistsError
from nemo_gym.training import ExportOptions, export_file


class ExportTrainingDataConfig(BaseModel):
    """Write stored rollouts in a trainer's own shape: trl, verl, nemo_rl, skyrl (token ids, masks, log
    probs, reward; the rollouts must be collected with return_token_id_information) or messages (chat
    messages + reward, for SFT)."""

    input_jsonl_fpath: str = Field(description="Rollouts written by ng_collect_rollouts.")
    output_jsonl_fpath: str = Field(description="Where the training records are written, one per line.")
    format: Literal["trl", "verl", "nemo_rl", "skyrl", "messages"] = Field(description="The trainer's shape.")
    drop_incomplete_groups: bool = Field(
        False,
        description="Leave out every task with fewer than num_repeats rollouts left after the other filters (GRPO groups).",
    )
    drop_cut_off: bool = Field(False, description="Leave out rollouts whose episode_end is not 'completed'.")
    min_reward: float | None = Field(None, description="Leave out rollouts with a lower reward.")
    num_repeats: int | None = Field(
        None, ge=1, description="Group size when no <stem>_job.json is beside the rollouts."
    )
    train_constrained_tokens: bool = Field(
        False,
        description="Train on tokens sampled under a grammar (a forced tool call, a JSON response format); by "
        "default they get mask 0, since their recorded log probs are not those of the distribution sampled from.",
    )
    overwrite: bool = Field(False, description="Replace an existing output file.")


def export_training_data(argv: list[str]) -> int:
    config = load_global_config(argv)
    params: ExportTrainingDataConfig = read_command_config(ExportTrainingDataConfig, config, "ng_export_training_data")
    source, target = Path(params.input_jsonl_fpath), Path(params.output_jsonl_fpath)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise ConfigError("+output_jsonl_fpath must differ from +input_jsonl_fpath")
    if target.exists() and not params.overwrite:
        raise OutputExistsError(f"{target} already exists; pass +overwrite=true to replace it")
    options = ExportOptions(
        format=params.format,
        drop_incomplete_groups=params.drop_incomplete_groups,
        drop_cut_off=params.drop_cut_off,
        min_reward=params.min_reward,
        num_repeats=params.num_repeats,
        train_constrained_tokens=params.train_constrained_tokens,
    )
    summary = export_file(source, target, options)
    print(summary.report(), flush=True)
    print(f"Output: {target}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_export_training_data", export_training_data, ExportTrainingDataConfig, argv)


if __name__ == "__main__":
    main()
