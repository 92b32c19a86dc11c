"""Test and benchmark helpers that stand in for paid APIs and run servers on loopback.

    from nemo_gym.testing import NgRunProcess, ScriptedOpenAI, ScriptedVLLM, ThreadedServer, registry_client

* `ScriptedOpenAI` plays an OpenAI-compatible model (`/v1/responses`, `/v1/chat/completions`) from a
  script; the default, `tool_then_answer`, calls the first offered tool once, then answers in text.
  Its `answer_with` plays a misbehaving upstream: `huge_answer` (300 MB, generated as it is sent),
  `trickled_answer` (a byte a second, forever), `answer_after_keepalives` (slow but healthy).
* `ScriptedVLLM` plays vLLM's server (`/tokenize`, `/detokenize`, chat and token-in `/v1/completions`)
  over a toy tokenizer that re-tokenizes the way a real one does, for token-exact rollout tests.
* `NgRunProcess` runs `ng_run` as a real subprocess and waits until its servers are up.
* `ThreadedServer` serves one FastAPI app in-process on a free loopback port; `registry_client`
  gives a server a `ServerClient` that knows other servers without a head server; `PeakRss` samples
  a process's largest resident set size while a block runs.
* `LocalRayCluster` runs a Ray cluster of several nodes on loopback in its own process (tests of
  `ng_run +ray_address=...`); it needs the `ray` extra.
* `nemo_gym.testing.compute_jobs` holds small importable jobs for testing `nemo_gym.compute` executors.
* The `serve` pytest fixture lives in `nemo_gym.testing.fixtures` (pytest is a dev dependency, so it
  is not imported here); add `pytest_plugins = ["nemo_gym.testing.fixtures"]` to a conftest.py.
"""

from __future__ import annotations

import importlib
import typing
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nemo_gym.testing.inprocess import PeakRss, ThreadedServer, free_port, registry_client
    from nemo_gym.testing.local_ray_cluster import LocalRayCluster
    from nemo_gym.testing.ng_run_process import NgRunProcess
    from nemo_gym.testing.scripted_openai import (
        ScriptedOpenAI,
        Turn,
        answer_after_keepalives,
        huge_answer,
        tool_then_answer,
        trickled_answer,
    )
    from nemo_gym.testing.scripted_vllm import ScriptedVLLM

# Exports load on first use: `python -m nemo_gym.testing.scripted_openai` (the upstream process of tests and
# benchmarks) imports this package first, and an eager import here would load that module twice (runpy warns).
_HOME = {
    "LocalRayCluster": "nemo_gym.testing.local_ray_cluster",
    "NgRunProcess": "nemo_gym.testing.ng_run_process",
    "PeakRss": "nemo_gym.testing.inprocess",
    "ScriptedOpenAI": "nemo_gym.testing.scripted_openai",
    "ScriptedVLLM": "nemo_gym.testing.scripted_vllm",
    "ThreadedServer": "nemo_gym.testing.inprocess",
    "Turn": "nemo_gym.testing.scripted_openai",
    "free_port": "nemo_gym.testing.inprocess",
    "registry_client": "nemo_gym.testing.inprocess",
    "tool_then_answer": "nemo_gym.testing.scripted_openai",
    "huge_answer": "nemo_gym.testing.scripted_openai",
    "trickled_answer": "nemo_gym.testing.scripted_openai",
    "answer_after_keepalives": "nemo_gym.testing.scripted_openai",
}


def __getattr__(name: str) -> typing.Any:
    if name not in _HOME:
        raise AttributeError(f"module 'nemo_gym.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "LocalRayCluster",
    "NgRunProcess",
    "PeakRss",
    "ScriptedOpenAI",
    "ScriptedVLLM",
    "ThreadedServer",
    "Turn",
    "answer_after_keepalives",
    "free_port",
    "huge_answer",
    "registry_client",
    "tool_then_answer",
    "trickled_answer",
]
