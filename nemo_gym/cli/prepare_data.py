"""`ng_prepare_data "+config_paths=[...]" +output_dirpath=<dir> +mode=example_validation|train_preparation`:
validate a config's data sets, write their per-field metrics, and collate them per type
(NeMo Gym's `gym dataset collate`; the work is in `nemo_gym.data_preparation`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import load_global_config
from nemo_gym.data_preparation import prepare_data
from nemo_gym.errors import ConfigError

# As NeMo Gym: no model is needed to look at data, so the policy model's `${policy_*}` may stay unset.
NO_MODEL = {"policy_base_url": "", "policy_api_key": "", "policy_model_name": ""}


class PrepareDataConfig(BaseModel):
    """Check every row of the data sets the config's agents name (`datasets:` entries), write each set's
    per-field statistics to <jsonl stem>_metrics.json beside it, and collate them per type into
    <output_dirpath>/<type>.jsonl (rows repeated num_repeats times, stamped with their agent_ref) with
    <type>_metrics.json. A stored metrics file that disagrees with the data stops the run (exit 2).
    example_validation takes the example sets; train_preparation the train, validation and benchmark sets."""

    output_dirpath: str = Field(description="Folder for the collated <type>.jsonl and <type>_metrics.json files.")
    mode: Literal["train_preparation", "example_validation"] = Field(
        description="example_validation (the example sets) or train_preparation (train, validation, benchmark)."
    )
    config_paths: list[str] | None = Field(None, description="The environments' config files.")
    should_download: bool = Field(
        False, description="NeMo Gym downloads missing sets from its registries; not done here (an error if needed)."
    )
    data_source: Literal["gitlab", "huggingface"] = Field(
        "huggingface", description="NeMo Gym's registry to download from; unused here."
    )
    overwrite_metrics_conflicts: bool = Field(
        False, description="Replace stored metrics files that disagree with the data instead of stopping."
    )


def run(argv: list[str]) -> int:
    config = load_global_config(argv, defaults=NO_MODEL)
    params: PrepareDataConfig = read_command_config(PrepareDataConfig, config, "ng_prepare_data")
    if not config.instances:
        raise ConfigError(
            "ng_prepare_data: no servers configured; pass the environments' configs in +config_paths=[...]"
        )
    report = prepare_data(
        config, params.mode, params.output_dirpath, overwrite_metrics_conflicts=params.overwrite_metrics_conflicts
    )
    for kind, path in report.collated.items():
        print(f"{kind}: {path} ({report.rows[kind]} rows)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_prepare_data", run, PrepareDataConfig, argv)


if __name__ == "__main__":
    main()
