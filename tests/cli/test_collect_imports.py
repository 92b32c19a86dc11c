"""What the collector process loads: it talks HTTP to servers, it does not serve one, so it never
imports FastAPI, Starlette or uvicorn (about half a second of `ng_collect_rollouts` start-up, before
the first rollout is sent). Nor aiohttp (only https:// needs it), Hydra (only overrides that are not
plain need its parser), the OpenAI SDK or httpx: together another ~0.3 s of start-up on the HTTP path,
and ~0.7 s more co-located, where the environments' servers run in the collector's process."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT

LAZY = "{'aiohttp', 'hydra', 'openai', 'httpx'}"
CONFIGS = (
    "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml,"
    "responses_api_models/openai_model/configs/openai_model.yaml"
)


def test_the_collector_and_its_cli_load_no_web_framework():
    script = (
        "import sys\n"
        "import nemo_gym.cli.collect, nemo_gym.rollouts\n"
        "from nemo_gym.rollouts.quality import is_cut_off\n"
        "from nemo_gym.config import load_global_config\n"
        "load_global_config(['+agent_name=a', '+input_jsonl_fpath=in.jsonl', '+output_jsonl_fpath=out.jsonl',\n"
        "                    '+head_server.port=11000', '+num_samples_in_parallel=16384'])\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & ({'fastapi', 'starlette', 'uvicorn'} | "
        + LAZY
        + ")))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_colocated_collector_loads_neither_the_openai_sdk_nor_httpx():
    """Co-located, the tutorial's agent and resources servers run in the collector's process: their
    modules (and NeMo Gym's import paths they use) leave the OpenAI SDK and httpx unimported."""
    script = (
        "import sys\n"
        "import nemo_gym.cli.collect, nemo_gym.colocated\n"
        "from nemo_gym.config import load_global_config\n"
        "import responses_api_agents.simple_agent.app, resources_servers.example_single_tool_call.app\n"
        f"load_global_config(['+colocate=true', '+config_paths=[{CONFIGS}]', '+policy_api_key=x', '+policy_base_url=http://127.0.0.1:1/v1', '+policy_model_name=m'])\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & " + LAZY + "))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_chat_completion_types_are_still_there_on_first_use():
    from nemo_gym import openai_utils
    from nemo_gym.openai_utils import NeMoGymChatCompletion, NeMoGymChoice

    completion = NeMoGymChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "42"}}],
        }
    )
    assert isinstance(completion.choices[0], NeMoGymChoice) and completion.choices[0].message.content == "42"
    assert openai_utils.NeMoGymChatCompletionMessageForTraining.__module__ == "nemo_gym.openai_chat_completions"


def test_server_classes_still_import_from_the_servers_package():
    # The package resolves its names on first use; environment code imports them as before.
    from nemo_gym.servers import SESSION_ID_KEY, SimpleResourcesServer, SimpleResponsesAPIAgent
    from nemo_gym.servers.resources import SimpleResourcesServer as direct

    assert SimpleResourcesServer is direct and SESSION_ID_KEY == "session_id"
    assert SimpleResponsesAPIAgent.server_kind == "responses_api_agents"
