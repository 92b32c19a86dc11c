"""`ng_dump_config "+config_paths=[...]"`: print the merged, resolved config with secrets masked."""

from __future__ import annotations

from omegaconf import OmegaConf
from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import load_global_config, redact


class DumpConfigConfig(BaseModel):
    """Print the config every server would see: config_paths merged with env.yaml and the CLI
    overrides, interpolations resolved, free ports assigned. API keys, tokens, passwords and the
    credentials inside URLs (http://user:***@host) are shown as ***; add +show_secrets=true to see them."""

    config_paths: list[str] | None = Field(None, description="YAML config files to merge (later ones win).")
    show_secrets: bool = Field(False, description="Print secret values instead of ***.")


def dump(argv: list[str]) -> int:
    config = load_global_config(argv)
    params: DumpConfigConfig = read_command_config(DumpConfigConfig, config, "ng_dump_config")
    container = config.to_container(resolve=True)
    if not params.show_secrets:
        container = redact(container)
    print(OmegaConf.to_yaml(OmegaConf.create(container)), end="")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_dump_config", dump, DumpConfigConfig, argv)


if __name__ == "__main__":
    main()
