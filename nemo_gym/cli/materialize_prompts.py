"""`ng_materialize_prompts +input_jsonl_fpath=<raw> +prompt_config=<prompt.yaml> +output_jsonl_fpath=<out>`:
build every row's request input from a prompt file, as `ng_collect_rollouts +prompt_config=` would at
run time, and write the rows (NeMo Gym's `gym dataset render`)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import GlobalConfig, load_global_config
from nemo_gym.errors import InputDataError, OutputExistsError, OutputIsInputError
from nemo_gym.prompt_templates import PromptTemplate
from nemo_gym.rollouts.output_lock import how_one_file
from nemo_gym.rollouts.tasks import check_task


class MaterializePromptsConfig(BaseModel):
    """Fill a prompt file (user, optional system: str.format templates of a row's top-level fields) for every
    row of a raw JSONL and write the rows with responses_create_params.input built, each stamped with
    prompt_config_used (the prompt file's path), as NeMo Gym does. Rows that already have an input are refused."""

    input_jsonl_fpath: str = Field(description="Raw rows: task fields, no responses_create_params.input.")
    prompt_config: str = Field(description="The prompt YAML file.")
    output_jsonl_fpath: str = Field(description="Where the rows with their input are written.")
    overwrite: bool = Field(False, description="Replace an existing output file.")


def materialize(argv: list[str]) -> int:
    config = load_global_config(argv)
    params: MaterializePromptsConfig = read_command_config(MaterializePromptsConfig, config, "ng_materialize_prompts")
    source, target = Path(params.input_jsonl_fpath), Path(params.output_jsonl_fpath)
    if not source.is_file():
        raise InputDataError("input file does not exist", path=str(source))
    if target.exists():
        if how_one_file(source, target):
            raise OutputIsInputError(
                f"+output_jsonl_fpath={target} is the input file; choose another path",
                path=str(target),
                input_path=str(source),
            )
        if not params.overwrite:
            raise OutputExistsError(f"{target} already exists; pass +overwrite=true to replace it")
    prompt_path = _prompt_file(params.prompt_config, config)
    template, _ = PromptTemplate.load(prompt_path)
    # Everything is built before the output is touched: a bad row leaves no half-written file.
    lines = []
    with source.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                raise InputDataError(f"not valid JSON ({error})", path=str(source), line=number) from None
            row = check_task(template.apply(row, path=str(source), line=number), path=str(source), line=number)
            lines.append(orjson.dumps(row | {"prompt_config_used": str(prompt_path)}) + b"\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_bytes(b"".join(lines))
    os.replace(temporary, target)
    print(f"Materialized {len(lines)} rows to {target}", flush=True)
    return 0


def _prompt_file(name: str, config: GlobalConfig) -> Path:
    """The prompt file: from the working directory, else from the project root (as NeMo Gym looks it up)."""
    candidate = Path(name)
    if not candidate.is_absolute() and not candidate.exists() and (config.project_root / candidate).exists():
        candidate = config.project_root / candidate
    return candidate.resolve()


def main(argv: list[str] | None = None) -> None:
    run_command("ng_materialize_prompts", materialize, MaterializePromptsConfig, argv)


if __name__ == "__main__":
    main()
