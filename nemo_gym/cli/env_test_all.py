"""`ng_test_all`: `ng_test` on every implementation folder that has a README.md (NeMo Gym's `gym env test`
without a server): resources servers, agents and models, each folder's tests in its own pytest run and,
for resources servers, its example data checked. Prints a summary; exit code 1 if any folder failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

from nemo_gym.cli.env_test import check_data, env_for_tests
from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import SERVER_TYPES, find_project_root, load_global_config
from nemo_gym.errors import ConfigError

# pytest's exit codes: 5 means it collected no test.
NO_TESTS_COLLECTED = 5


class AllTestsConfig(BaseModel):
    """Run every implementation folder's tests (resources_servers/*, responses_api_agents/*, responses_api_models/*
    that have a README.md) and check each resources server's example data, as ng_test does for one; print which
    passed, failed, have no tests, or failed the data checks. Exit code 1 if any did."""

    fail_on_total_and_test_mismatch: bool = Field(
        False, description="Also fail when some folders were skipped for having no README.md."
    )
    num_shards: int = Field(1, ge=1, description="Split the folders into this many shards (for parallel CI jobs).")
    shard_index: int = Field(0, ge=0, description="Which shard (0-based) this run tests.")
    should_validate_data: bool = Field(True, description="Check the resources servers' example data too.")


def candidate_folders(root: Path) -> list[Path]:
    """Every implementation folder under the project root, in type then name order."""
    return [
        folder
        for kind in SERVER_TYPES
        for folder in sorted((root / kind).glob("*"))
        if folder.is_dir() and not folder.name.startswith((".", "__"))
    ]


def _listing(folders: list[Path], root: Path) -> str:
    return "".join(f"\n  - {folder.relative_to(root)}" for folder in folders) or "\n  (none)"


def run_all_tests(argv: list[str]) -> int:
    params: AllTestsConfig = read_command_config(AllTestsConfig, load_global_config(argv), "ng_test_all")
    if params.shard_index >= params.num_shards:
        raise ConfigError(f"+shard_index={params.shard_index} must be below +num_shards={params.num_shards}")
    root = find_project_root()
    candidates = candidate_folders(root)
    with_readme = [folder for folder in candidates if (folder / "README.md").is_file()]
    folders = with_readme[params.shard_index :: params.num_shards]
    print(
        f"Found {len(candidates)} folders, {len(with_readme)} with a README.md; testing {len(folders)}"
        + (f" (shard {params.shard_index + 1} of {params.num_shards})" if params.num_shards > 1 else ""),
        flush=True,
    )
    passed: list[Path] = []
    failed: list[Path] = []
    no_tests: list[Path] = []
    data_failed: list[Path] = []
    took: list[tuple[float, Path]] = []
    for folder in folders:
        name = folder.relative_to(root)
        started = time.monotonic()
        if (folder / "tests").is_dir():
            code = subprocess.call(
                [sys.executable, "-m", "pytest", "tests", "-q"], cwd=folder, env=env_for_tests(folder, root)
            )
        else:
            code = NO_TESTS_COLLECTED
        (passed if code == 0 else no_tests if code == NO_TESTS_COLLECTED else failed).append(folder)
        if params.should_validate_data and folder.parent.name == "resources_servers":
            problems = check_data(folder)
            if problems:
                data_failed.append(folder)
                for problem in problems:
                    print(f"ng_test_all: {name}: data: {problem}", file=sys.stderr, flush=True)
        took.append((time.monotonic() - started, folder))

    print("\nTime per folder (slowest first):", flush=True)
    for seconds, folder in sorted(took, reverse=True, key=lambda item: item[0]):
        print(f"  {seconds:7.2f} s  {folder.relative_to(root)}", flush=True)
    total = len(folders) or 1
    for label, group in (
        ("Tests passed", passed),
        ("Tests failed", failed),
        ("Tests missing", no_tests),
        ("Data validation failed", data_failed),
    ):
        print(f"\n{label} {len(group)} / {len(folders)} ({100 * len(group) / total:.2f}%):{_listing(group, root)}")
    skipped = [folder for folder in candidates if folder not in with_readme]
    if failed or no_tests:
        print(f"\nRerun one folder with: ng_test +entrypoint={(failed + no_tests)[0].relative_to(root)}", flush=True)
    mismatch = params.fail_on_total_and_test_mismatch and bool(skipped)
    if mismatch:
        print(f"\n{len(skipped)} folder(s) have no README.md and were not tested:{_listing(skipped, root)}")
    return 1 if failed or no_tests or data_failed or mismatch else 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_test_all", run_all_tests, AllTestsConfig, argv)


if __name__ == "__main__":
    main()
