"""NeMo Gym's import paths work here with NeMo Gym's names and behaviour, onto our own servers,
client and config; typed items round-trip to exactly the JSON our stack produces."""

import importlib
import json
from pathlib import Path

import httpx
import orjson
import pytest
from app import LuckyNumberConfig, LuckyNumberServer
from fastapi import FastAPI

from nemo_gym.base_resources_server import BaseVerifyRequest as NgVerifyRequest
from nemo_gym.errors import HTTPStatusError, JudgeError
from nemo_gym.global_config import get_global_config_dict, remember_server_bootstrap
from nemo_gym.judge import call_judge, reraise_judge_errors
from nemo_gym.openai_utils import (
    NeMoGymAsyncOpenAI,
    NeMoGymChatCompletion,
    NeMoGymChatCompletionCreateParamsNonStreaming,
    NeMoGymResponse,
    NeMoGymResponseFunctionToolCall,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputText,
)
from nemo_gym.prompt import fill_prompt, load_prompt_config
from nemo_gym.reward_profile import compute_pass_majority_metrics, compute_subset_metrics, highest_k_metrics
from nemo_gym.server_utils import ServerClient, get_response_json, get_server_url, raise_for_status, request
from nemo_gym.servers.resources import BaseVerifyRequest as OurVerifyRequest
from nemo_gym.testing import ThreadedServer, registry_client

PROJECT_ROOT = Path(__file__).resolve().parents[2]

NEMO_GYM_NAMES = {
    "nemo_gym": ["PARENT_DIR", "ROOT_DIR"],
    "nemo_gym.base_resources_server": [
        "SimpleResourcesServer",
        "BaseResourcesServerConfig",
        "BaseVerifyRequest",
        "BaseVerifyResponse",
        "BaseRunRequest",
        "BaseSeedSessionRequest",
        "BaseSeedSessionResponse",
        "ReverifyMode",
        "BaseMultiRewardVerifyResponse",
    ],
    "nemo_gym.openai_utils": [
        "NeMoGymResponse",
        "NeMoGymResponseCreateParamsNonStreaming",
        "NeMoGymEasyInputMessage",
        "NeMoGymResponseOutputMessage",
        "NeMoGymResponseOutputText",
        "NeMoGymResponseFunctionToolCall",
        "NeMoGymResponseReasoningItem",
        "NeMoGymFunctionCallOutput",
        "NeMoGymChatCompletion",
        "NeMoGymChatCompletionCreateParamsNonStreaming",
        "NeMoGymAsyncOpenAI",
        "RATE_LIMIT_ERROR_CODES",
        "RETRY_ERROR_CODES",
        "accumulate_response_usage",
        "NeMoGymResponseInput",
        "NeMoGymResponseInputTokensDetails",
        "NeMoGymResponseOutputTokensDetails",
        "NeMoGymResponseOutputMessageForTraining",
        "NeMoGymResponseFunctionToolCallForTraining",
        "NeMoGymChatCompletionMessageForTraining",
        "RESPONSES_TO_TRAIN",
    ],
    "nemo_gym.rollout_collection": ["NG_FAILURE_CLASS_KEY", "NG_NO_PERSIST_KEY", "NG_TERMINAL_KEY"],
    "nemo_gym.server_utils": [
        "ServerClient",
        "SESSION_ID_KEY",
        "raise_for_status",
        "get_response_json",
        "request",
        "get_server_url",
        "apply_rollout_prefix",
        "rollout_path_prefix",
    ],
    "nemo_gym.config_types": [
        "ModelServerRef",
        "ResourcesServerRef",
        "BaseServerConfig",
        "AggregateMetrics",
        "AggregateMetricsRequest",
        "ROLLOUT_PATH_PREFIX",
        "TOKEN_CAPTURE_PATH_SEGMENT",
    ],
    "nemo_gym.reward_profile": [
        "compute_pass_majority_metrics",
        "highest_k_metrics",
        "compute_subset_metrics",
        "AggregateMetricsMixin",
        "compute_aggregate_metrics",
    ],
    "nemo_gym.judge": ["call_judge", "JudgeError", "reraise_judge_errors", "judge_failsafe"],
    "nemo_gym.global_config": [
        "get_global_config_dict",
        "TASK_INDEX_KEY_NAME",
        "ROLLOUT_INDEX_KEY_NAME",
        "AGENT_REF_KEY_NAME",
        "HEAD_SERVER_KEY_NAME",
        "POLICY_MODEL_NAME_KEY_NAME",
        "SKILLS_REF_KEY_NAME",
        "get_hf_token",
    ],
    "nemo_gym.prompt": ["load_prompt_config", "PromptConfig", "fill_prompt"],
    "nemo_gym.base_responses_api_agent": [
        "SimpleResponsesAPIAgent",
        "BaseResponsesAPIAgent",
        "BaseResponsesAPIAgentConfig",
        "Body",
    ],
    "nemo_gym.rollout_correlation": [
        "RolloutContextMiddleware",
        "current_rollout_id",
        "maybe_rollout_id_from_run_body",
        "rollout_context",
        "ROLLOUT_ID_PATTERN",
    ],
}


@pytest.mark.parametrize("module", sorted(NEMO_GYM_NAMES))
def test_every_name_environments_import_exists(module: str) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in NEMO_GYM_NAMES[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lacks {missing}"


def stored_rollouts() -> list[dict]:
    rows = []
    for path in sorted(PROJECT_ROOT.glob("resources_servers/*/data/example_rollouts.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def test_typed_rows_serialise_to_exactly_the_json_of_our_own_request_class() -> None:
    rows = stored_rollouts()
    assert len(rows) >= 50
    kinds = set()
    for row in rows:
        raw = orjson.dumps(row)
        ours, typed = OurVerifyRequest.model_validate_json(raw), NgVerifyRequest.model_validate_json(raw)
        assert typed.__pydantic_serializer__.to_json(typed) == ours.__pydantic_serializer__.to_json(ours)
        assert typed.model_dump(mode="json") == ours.model_dump(mode="json")
        kinds |= {item.type for item in typed.response.output}
        texts = [
            part["text"] for item in row["response"]["output"] if item["type"] == "message" for part in item["content"]
        ]
        assert typed.response.output_text == "".join(texts)
    assert {"message", "function_call", "function_call_output"} <= kinds


def test_items_built_in_python_say_what_they_are() -> None:
    message = NeMoGymResponseOutputMessage(id="m", content=[NeMoGymResponseOutputText(text="42", annotations=[])])
    call = NeMoGymResponseFunctionToolCall(call_id="c", name="f", arguments="{}")
    response = NeMoGymResponse(id="r", output=[call, message])
    assert response.output_text == "42"
    dumped = response.model_dump()["output"]
    assert dumped[0] == {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    assert dumped[1] == {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "42", "annotations": []}],
    }
    unknown = NeMoGymResponse.model_validate({"id": "r", "output": [{"type": "mcp_call", "name": "x", "k": 1}]})
    assert unknown.output[0].type == "mcp_call"
    assert unknown.model_dump()["output"] == [{"type": "mcp_call", "name": "x", "k": 1}]


def test_an_environments_own_item_class_also_writes_back_only_what_it_was_given() -> None:
    class GradedCall(NeMoGymResponseFunctionToolCall):
        grade: float = 0.0
        note: str | None = None

    assert GradedCall(call_id="c", name="f", arguments="{}", grade=0.5).model_dump() == {
        "type": "function_call",
        "call_id": "c",
        "name": "f",
        "arguments": "{}",
        "grade": 0.5,
    }
    parsed = GradedCall.model_validate({"type": "function_call", "call_id": "c", "name": "f", "arguments": "", "x": 1})
    assert parsed.model_dump() == {"type": "function_call", "call_id": "c", "name": "f", "arguments": "", "x": 1}
    assert orjson.loads(parsed.model_dump_json()) == parsed.model_dump()


@pytest.fixture
def lucky_server():
    config = LuckyNumberConfig(name="lucky_number", max_hints=2, max_request_body_bytes=200_000)
    server = LuckyNumberServer(config=config, server_client=registry_client({}))
    with ThreadedServer.of(server) as running:
        yield running


def row_with_answer(text: str, secret: int) -> dict:
    row = json.loads((Path(__file__).parent / "envs/lucky_number/data/example.jsonl").read_text().splitlines()[0])
    row["secret"] = secret
    row["response"] = {
        "id": "resp_1",
        "output": [
            {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "check_guess", "arguments": '{"guess":7}'},
            {"type": "function_call_output", "call_id": "c1", "output": '{"verdict":"a guess"}'},
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            },
        ],
    }
    return row


def test_nemo_gym_style_server_is_served_by_our_machinery(lucky_server: ThreadedServer) -> None:
    with httpx.Client(base_url=lucky_server.url) as client:
        right = client.post("/verify", json=row_with_answer("It is 7.", secret=7))
        assert right.status_code == 200, right.text
        assert right.json()["reward"] == 1.0 and right.json()["used_tool"] is True
        assert right.json()["response"]["output"] == row_with_answer("It is 7.", secret=7)["response"]["output"]
        assert client.post("/verify", json=row_with_answer("It is 8.", secret=7)).json()["reward"] == 0.0

        # The session cookie: the same rollout counts its hints, a new one starts again.
        first = client.post("/check_guess", json={"guess": 1})
        assert first.json() == {"verdict": "a guess", "hints_used": 1}
        again = client.post("/check_guess", json={"guess": 2}, cookies=first.cookies)
        assert again.json()["hints_used"] == 2
        assert (
            client.post("/check_guess", json={"guess": 2}, cookies=again.cookies).json()["verdict"] == "no more hints"
        )
    with httpx.Client(base_url=lucky_server.url) as fresh:
        assert fresh.post("/check_guess", json={"guess": 2}).json()["hints_used"] == 1

        too_big = row_with_answer("x" * 300_000, secret=7)
        refused = fresh.post("/verify", json=too_big)
        assert refused.status_code == 413
        missing = fresh.post("/verify", json={"responses_create_params": {"input": "hi"}, "secret": 1})
        assert missing.status_code == 422
        assert "response" in missing.json()["error"]["message"]


def judge_app(answers: list) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/responses")
    async def respond(body: dict) -> dict:
        status, payload = answers.pop(0)
        if status != 200:
            from fastapi.responses import JSONResponse

            return JSONResponse(payload, status_code=status)
        return payload

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        return {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "yes"}}],
        }

    return app


JUDGE_VERDICT = {
    "id": "j",
    "output": [
        {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "[[A=B]]", "annotations": []}],
        }
    ],
}


async def test_server_client_call_shape_and_judge() -> None:
    answers = [(200, JUDGE_VERDICT), (400, {"error": "bad key"}), (200, {"not": "a response"})]
    with ThreadedServer(judge_app(answers)) as judge:
        ours = registry_client({"judge": ("responses_api_models", judge.url)})
        client = ServerClient.from_client(ours)
        try:
            verdict = await call_judge(
                client,
                server_name="judge",
                url_path="/v1/responses",
                json={"input": "?"},
                response_model=NeMoGymResponse,
            )
            assert verdict.output_text == "[[A=B]]"
            with pytest.raises(JudgeError, match="400"):
                await call_judge(
                    client,
                    server_name="judge",
                    url_path="/v1/responses",
                    json={"input": "?"},
                    response_model=NeMoGymResponse,
                )
            with pytest.raises(JudgeError, match="ValidationError"):
                await call_judge(
                    client,
                    server_name="judge",
                    url_path="/v1/responses",
                    json={"input": "?"},
                    response_model=NeMoGymResponse,
                )

            params = NeMoGymChatCompletionCreateParamsNonStreaming(
                messages=[{"role": "user", "content": "?"}], model="j"
            )
            answer = await client.post(server_name="judge", url_path="/v1/chat/completions", json=params)
            await raise_for_status(answer)
            assert answer.status == 200 and answer.ok
            completion = NeMoGymChatCompletion.model_validate(await answer.json())
            assert completion.choices[0].message.content == "yes"
            assert (await get_response_json(answer))["model"] == "j"

            missing = await request("GET", f"{judge.url}/nowhere")
            assert missing.status == 404
            with pytest.raises(HTTPStatusError):
                await raise_for_status(missing)

            openai_client = NeMoGymAsyncOpenAI(base_url=f"{judge.url}/v1", api_key="k")
            assert (await openai_client.create_chat_completion(model="m", messages=[]))["model"] == "m"
            await openai_client.aclose()
        finally:
            await client.aclose()


async def test_reraise_judge_errors_relabels_a_failed_call() -> None:
    async def broken() -> None:
        raise ConnectionError("judge went away")

    with pytest.raises(JudgeError, match="ConnectionError: judge went away"):
        await reraise_judge_errors(broken())


def test_reward_profile_metrics() -> None:
    tasks = [
        [
            {"reward": 1.0, "answer": "a", "level": "easy"},
            {"reward": 1.0, "answer": "a"},
            {"reward": 0.0, "answer": "b"},
        ],
        [
            {"reward": 0.0, "answer": None, "level": "hard"},
            {"reward": 1.0, "answer": "c"},
            {"reward": 0.0, "answer": "d"},
        ],
    ]
    metrics, scores, names, max_k = compute_pass_majority_metrics(tasks, answer_key="answer")
    assert names == ["accuracy", "no_answer"] and max_k == 3 and len(scores) == 2
    assert metrics["pass@1/accuracy"] == pytest.approx(100 * ((2 / 3) + (1 / 3)) / 2)
    assert metrics["pass@3/accuracy"] == 100.0
    assert metrics["pass@1[avg-of-3]/accuracy"] == pytest.approx(50.0)
    # Task 1: "a" wins the vote with score 1; task 2: three single votes ("c"=1, "d"=0), averaged.
    assert metrics["majority@3/accuracy"] == pytest.approx(100 * (1 + 0.5) / 2)
    assert metrics["pass@1[avg-of-3]/no_answer"] == pytest.approx(100 * (0 + 1 / 3) / 2)
    assert metrics["per_sample_aggregate"]["accuracy"] == [50.0, 100.0, 0.0]
    assert metrics["pass@1[avg-of-2]/accuracy/std_dev_across_runs"] == pytest.approx(35.35533905932738)
    assert highest_k_metrics(metrics, "pass@{k}", score_names=["accuracy"]) == {"pass@3/accuracy": 100.0}
    assert set(highest_k_metrics(metrics, "pass@1[avg-of-{k}]", exclude_names=["no_answer"])) == {
        "pass@1[avg-of-3]/accuracy"
    }
    subsets = compute_subset_metrics(tasks, subset_key="level")
    assert subsets["easy/pass@1[avg-of-3]/accuracy"] == pytest.approx(200 / 3)
    assert "easy/per_sample_aggregate" not in subsets
    assert compute_pass_majority_metrics([]) == ({}, [], [], 0)


def test_prompt_files(tmp_path: Path) -> None:
    path = tmp_path / "prompt.yaml"
    path.write_text("system: Be brief.\nuser: 'Solve {question} {{exactly}}'\n")
    prompt = load_prompt_config(str(path))
    assert fill_prompt(prompt, {"question": "1+1"}) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Solve 1+1 {exactly}"},
    ]
    with pytest.raises(KeyError, match="question"):
        fill_prompt(prompt, {"other": 1})


def test_global_config_inside_a_server_shows_addresses_not_other_servers_keys() -> None:
    from nemo_gym.client import ServerInfo

    registry = [
        ServerInfo(name="lucky", server_type="resources_servers", implementation="lucky", url="http://127.0.0.1:4001"),
        ServerInfo(
            name="judge", server_type="responses_api_models", implementation="openai_model", url="http://10.0.0.2:4002"
        ),
    ]
    remember_server_bootstrap("lucky", {"max_hints": 2}, "http://127.0.0.1:11000", registry)
    config = get_global_config_dict()
    assert config.lucky.resources_servers.lucky.max_hints == 2
    assert dict(config.judge.responses_api_models.openai_model) == {"host": "10.0.0.2", "port": 4002}
    assert config.head_server.port == 11000
    assert get_server_url("judge") == "http://10.0.0.2:4002"


def test_training_items_read_the_token_fields_our_model_servers_put_on_generated_items() -> None:
    """NeMo Gym agents that train re-read generated items as `...ForTraining` (token ids required)."""
    from pydantic import ValidationError

    from nemo_gym.openai_utils import (
        RESPONSES_TO_TRAIN,
        NeMoGymResponseFunctionToolCall,
        NeMoGymResponseFunctionToolCallForTraining,
        NeMoGymResponseOutputMessage,
        NeMoGymResponseOutputMessageForTraining,
    )

    tokens = {"prompt_token_ids": [1, 2], "generation_token_ids": [3, 4], "generation_log_probs": [-0.1, -0.2]}
    message = {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "42", "annotations": []}],
        **tokens,
    }
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "id": "fc", **tokens}
    for item, plain, training in (
        (message, NeMoGymResponseOutputMessage, NeMoGymResponseOutputMessageForTraining),
        (call, NeMoGymResponseFunctionToolCall, NeMoGymResponseFunctionToolCallForTraining),
    ):
        parsed = training.model_validate(item)
        assert isinstance(parsed, plain) and RESPONSES_TO_TRAIN[plain] is training
        assert parsed.generation_token_ids == [3, 4]
        assert orjson.loads(orjson.dumps(parsed.model_dump())) == item  # nothing added or dropped
        with pytest.raises(ValidationError):
            training.model_validate({k: v for k, v in item.items() if k != "generation_log_probs"})


def test_a_prepare_script_reads_the_hf_token_from_its_command_line(tmp_path: Path) -> None:
    """NeMo Gym benchmarks' prepare scripts call `get_hf_token()` for gated datasets."""
    import subprocess
    import sys

    script = tmp_path / "prepare.py"
    script.write_text("from nemo_gym.global_config import get_hf_token\nprint(repr(get_hf_token()))\n")
    for argv, printed in ((["+hf_token=hf_abc"], "'hf_abc'"), ([], "None")):
        done = subprocess.run(
            [sys.executable, str(script), *argv], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == printed


def test_an_environment_server_imports_the_openai_sdk_only_when_it_uses_a_chat_completion_model() -> None:
    """`nemo_gym.base_resources_server` (what every NeMo Gym-style environment imports) used to import the
    whole OpenAI SDK for the chat completion models, ~0.5-1 s of every server's start; they are built on
    first access now, as the same classes."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import nemo_gym.base_resources_server, nemo_gym.openai_utils as utils\n"
        "print('openai' in sys.modules)\n"
        "from nemo_gym.openai_utils import NeMoGymChatCompletion, NeMoGymChoice\n"
        "from openai.types.chat import ChatCompletion\n"
        "print(issubclass(NeMoGymChatCompletion, ChatCompletion), utils.NeMoGymChoice is NeMoGymChoice)\n"
        "print(NeMoGymChatCompletion.model_fields['choices'].annotation)\n"
        "print(hasattr(utils, 'NoSuchName'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "False",
        "True True",
        "list[nemo_gym.openai_chat_completions.NeMoGymChoice]",
        "False",
    ]
