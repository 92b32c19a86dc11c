"""reasoning_gym's scoring, run in the sandbox (see nemo_gym.compute.open_confined_scorer).

Ten of the package's `score_answer` functions parse the answer (and some the task's metadata) with
sympy's `parse_expr`/`sympify` or `eval`, which run whatever the text says. So the generator and its
scorer are built and called here, in a confined fork per answer, never in the server process. This
file is shipped into the sandbox as source: it imports only the standard library and reasoning-gym.
"""

from __future__ import annotations

from typing import Any


def warm_up() -> None:
    """Import every generator (and sympy) once per sandboxed interpreter, before any deadline starts."""
    from reasoning_gym import create_dataset

    dataset = create_dataset("basic_arithmetic", size=1, seed=0)
    dataset.score_answer(dataset[0]["answer"], dataset[0])


def score(
    dataset_name: str, dataset_config: dict[str, Any], answer: str | None, entry: dict[str, Any]
) -> dict[str, Any]:
    """{"reward": float} from the generator's own scorer, or {"config_error": why} for a config the
    generator refuses (the task row's fault, not the answer's)."""
    from reasoning_gym import create_dataset

    try:
        dataset = create_dataset(dataset_name, size=1, seed=0, **dataset_config)
    except (TypeError, ValueError, AssertionError) as error:
        return {"config_error": str(error)}
    return {"reward": float(dataset.score_answer(answer, entry))}
