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


def _printed_by_fresh_python(script: str) -> str:
    """What `script` prints, run by a fresh interpreter in the project (so nothing is imported yet)."""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


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
    assert _printed_by_fresh_python(script) == "[]"


END_OF_RUN = (
    "{'nemo_gym.rollouts.quality', 'nemo_gym.rollouts.groups', 'nemo_gym.rollouts.aggregate_metrics', "
    "'nemo_gym.servers.aggregate_metrics', 'urllib.request'}"
)


def test_the_first_rollout_waits_for_no_end_of_run_module():
    """Everything `ng_collect_rollouts` does before its first rollout: import, load the config, probe the
    head, take the output. The quality report, GRPO groups and aggregate-metrics modules are imported
    after the last rollout, and the head probe speaks http.client, not urllib.request (~0.1 s together)."""
    script = (
        "import sys, tempfile, pathlib\n"
        "import nemo_gym.cli.collect, nemo_gym.rollouts\n"
        "from nemo_gym.cli.head_probe import probe_head\n"
        "from nemo_gym.config import load_global_config\n"
        "from nemo_gym.rollouts import CollectionSpec, FileCollection, RolloutCollector, TaskPlan\n"
        "config = load_global_config(['+agent_name=a', '+input_jsonl_fpath=in.jsonl', '+output_jsonl_fpath=out.jsonl',\n"
        "                             '+head_server.port=1'])\n"
        "assert probe_head(config.head_url) is None\n"
        "folder = pathlib.Path(tempfile.mkdtemp())\n"
        '(folder / \'in.jsonl\').write_text(\'{"responses_create_params": {"input": "hi"}}\\n\')\n'
        "spec = CollectionSpec(agent_name='a', input_jsonl_fpath=str(folder / 'in.jsonl'))\n"
        "collection = FileCollection(spec, folder / 'out.jsonl', 'new')\n"
        "collection.open()\n"
        "collection.close()\n"
        "print(sorted(set(sys.modules) & " + END_OF_RUN + "))\n"
    )
    assert _printed_by_fresh_python(script) == "[]"


def test_the_end_of_run_reports_load_no_web_framework():
    """After the last rollout the collector writes the quality report (which reads how each episode
    ended), the GRPO groups and the metrics: none of it may bring FastAPI, Starlette or uvicorn, about
    half a second of every collection's wall time."""
    script = (
        "import sys, tempfile, pathlib\n"
        "from nemo_gym.rollouts.aggregate_metrics import format_environment_key_metrics\n"
        "from nemo_gym.rollouts.groups import GroupTally, groups_path, write_groups\n"
        "from nemo_gym.rollouts.quality import build_quality_report, format_quality_summary, is_cut_off\n"
        "from nemo_gym.rollouts.task_plan import TaskPlan\n"
        "rows = pathlib.Path(tempfile.mkdtemp()) / 'out.jsonl'\n"
        'rows.write_text(\'{"_ng_task_index": 0, "_ng_rollout_index": 0, "reward": 1.0, \'\n'
        '                \'"response": {"status": "incomplete", "output": []}}\\n\')\n'
        "report = build_quality_report(rows)\n"
        "assert report.episode_ends == {'max_output_tokens': 1}, report.episode_ends\n"
        "assert is_cut_off({'response': {'status': 'incomplete'}})\n"
        "print(format_quality_summary(report, None), file=sys.stderr)\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'fastapi', 'starlette', 'uvicorn'}))\n"
    )
    assert _printed_by_fresh_python(script) == "[]"


def test_a_colocated_collector_loads_neither_the_openai_sdk_nor_httpx_nor_uvicorn():
    """Co-located, the tutorial's agent and resources servers run in the collector's process: building and
    starting them (with the model servers already running) leaves the OpenAI SDK, httpx, uvicorn and the
    launcher unimported. Their servers are called in memory; uvicorn was ~25 ms of the first row's wait."""
    script = (
        "import asyncio, sys\n"
        "import nemo_gym.cli.collect\n"
        "from nemo_gym.colocated import ColocatedStack\n"
        "from nemo_gym.config import load_global_config\n"
        f"config = load_global_config(['+colocate=true', '+config_paths=[{CONFIGS}]', '+policy_api_key=x', '+policy_base_url=http://127.0.0.1:1/v1', '+policy_model_name=m'])\n"
        "async def build():\n"
        "    async with ColocatedStack(config, 'http://127.0.0.1:1') as stack:\n"
        "        assert sorted(stack.servers) == ['example_single_tool_call', 'example_single_tool_call_simple_agent']\n"
        "asyncio.run(build())\n"
        "loaded = {name.split('.')[0] for name in sys.modules} | ({'launcher'} if 'nemo_gym.launcher' in sys.modules else set())\n"
        "print(sorted(loaded & ({'uvicorn', 'launcher'} | " + LAZY + ")))\n"
    )
    assert _printed_by_fresh_python(script) == "[]"


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
