"""`ng_run "+config_paths=[...]"`: start the head server and every configured server, stay up until
Ctrl+C or SIGTERM, and leave no process behind."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.cli.stacks import RAY_ADDRESS_HELP, new_stack
from nemo_gym.config import load_global_config
from nemo_gym.env_requirements import INSTALL_REQUIREMENTS_HELP, ensure_requirements
from nemo_gym.launcher import LaunchOptions


class RunConfig(BaseModel):
    """Start the head server plus one process per server instance in the merged config, print where
    each one listens, and supervise them until Ctrl+C (or SIGTERM). A server that dies stops the stack,
    unless it is one of several replicas and a sibling lives on (then it is reported and the rest go on)."""

    config_paths: list[str] = Field(description="YAML config files to merge (later ones win).")
    startup_timeout_s: float = Field(60.0, description="Seconds every server gets to answer /health.")
    stop_timeout_s: float = Field(5.0, description="Seconds a server gets to exit after SIGTERM before SIGKILL.")
    ray_address: str | None = Field(None, description=RAY_ADDRESS_HELP)
    install_requirements: bool = Field(False, description=INSTALL_REQUIREMENTS_HELP)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(argv: list[str]) -> int:
    config = load_global_config(argv)
    params = read_command_config(RunConfig, config, "ng_run")  # a typo'd key first: it may be why nothing is configured
    config.require_servers()
    if params.ray_address is None:
        # On a Ray cluster the servers import from the cluster's environment, which this process cannot see.
        folders = [instance.directory for instance in config.instances]
        ensure_requirements(folders, config.project_root, install=params.install_requirements, command="ng_run")
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    options = LaunchOptions(startup_timeout_s=params.startup_timeout_s, stop_timeout_s=params.stop_timeout_s)
    stack = new_stack(config, options, params.ray_address)
    # Outside the try: a start that fails (a busy port, a server that will not come up) has already
    # stopped what it started, and stopping a stack that never started would raise a second error.
    stack.start()
    try:
        print(
            f"All {stack.server_count} servers are up ({stack.startup_s:.1f} s). Head server: {stack.head_url}",
            flush=True,
        )
        print(stack.table(), flush=True)
        print("Press Ctrl+C to stop.", flush=True)
        while True:
            time.sleep(0.5)
            stack.check()
    except KeyboardInterrupt:
        print("Stopping servers...", file=sys.stderr, flush=True)
        return 0
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> None:
    run_command("ng_run", serve, RunConfig, argv)


if __name__ == "__main__":
    main()
