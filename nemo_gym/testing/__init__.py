"""Test and benchmark helpers that stand in for paid APIs and run servers on loopback.

    from nemo_gym.testing import NgRunProcess, ScriptedOpenAI, ThreadedServer, registry_client

* `ScriptedOpenAI` plays an OpenAI-compatible model (`/v1/responses`, `/v1/chat/completions`) from a
  script; the default, `tool_then_answer`, calls the first offered tool once, then answers in text.
* `NgRunProcess` runs `ng_run` as a real subprocess and waits until its servers are up.
* `ThreadedServer` serves one FastAPI app in-process on a free loopback port; `registry_client`
  gives a server a `ServerClient` that knows other servers without a head server.
* The `serve` pytest fixture lives in `nemo_gym.testing.fixtures` (pytest is a dev dependency, so it
  is not imported here); add `pytest_plugins = ["nemo_gym.testing.fixtures"]` to a conftest.py.
"""

from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn, tool_then_answer

__all__ = [
    "NgRunProcess",
    "ScriptedOpenAI",
    "ThreadedServer",
    "Turn",
    "free_port",
    "registry_client",
    "tool_then_answer",
]
