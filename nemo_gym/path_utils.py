"""NeMo Gym's `nemo_gym.path_utils` import path: where a collection's failures file sits beside its output."""

from __future__ import annotations

from pathlib import Path

from nemo_gym.rollouts.store import sidecar

__all__ = ["failures_path_for"]


def failures_path_for(output_fpath: Path) -> Path:
    """`results/run.jsonl` -> `results/run_failures.jsonl`: the file our collector writes failed rollouts to."""
    return sidecar(Path(output_fpath), "failures")
