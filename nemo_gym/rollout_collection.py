"""NeMo Gym's `nemo_gym.rollout_collection` import path: the row fields by which an agent reports that a
rollout failed.

    from nemo_gym.rollout_collection import NG_FAILURE_CLASS_KEY, NG_NO_PERSIST_KEY, NG_TERMINAL_KEY

    return {**row, NG_FAILURE_CLASS_KEY: "timeout_exceeded", "error": "the sandbox never answered"}

An agent whose `/run` returns a row with `_ng_failure_class` set has the rollout recorded in
`<output>_failures.jsonl`, never in the rows or the metrics, and it is not retried in that run; with
`_ng_failure_terminal` as well, a resume does not run it again either. A row with `_ng_no_persist` (a
rollout that was killed) is written nowhere, and a resume runs it again. The collection itself is
`ng_collect_rollouts` (`nemo_gym.rollouts`); NeMo Gym's `RolloutCollectionHelper` has no counterpart here.
"""

from __future__ import annotations

from nemo_gym.rollouts.tasks import FAILURE_CLASS_FIELD, FAILURE_TERMINAL_FIELD, NO_PERSIST_FIELD

__all__ = ["NG_FAILURE_CLASS_KEY", "NG_NO_PERSIST_KEY", "NG_TERMINAL_KEY"]

NG_FAILURE_CLASS_KEY = FAILURE_CLASS_FIELD
NG_NO_PERSIST_KEY = NO_PERSIST_FIELD
NG_TERMINAL_KEY = FAILURE_TERMINAL_FIELD
