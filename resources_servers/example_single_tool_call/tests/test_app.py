"""example_single_tool_call: the tool answers, every completed episode scores 1.0 and a cut-off one 0.0."""

from __future__ import annotations

import httpx

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from resources_servers.example_single_tool_call.app import ExampleSingleToolCallConfig, ExampleSingleToolCallServer
from responses_api_agents.simple_agent.app import SimpleAgent, SimpleAgentConfig


def make_server() -> ExampleSingleToolCallServer:
    return ExampleSingleToolCallServer(
        config=ExampleSingleToolCallConfig(name="env", domain="agent"), server_client=registry_client({})
    )


def test_get_weather_and_verify_over_http(serve):
    url = serve(make_server().setup_webserver())
    assert httpx.post(f"{url}/get_weather", json={"city": "Oslo"}).json() == {
        "city": "Oslo",
        "weather_description": "The weather in Oslo is cold.",
    }
    row = {"responses_create_params": {"input": "weather?"}, "response": {"id": "r", "output": []}}
    assert httpx.post(f"{url}/verify", json=row).json()["reward"] == 1.0


def test_a_tool_call_without_a_city_is_a_422_naming_it(serve):
    url = serve(make_server().setup_webserver())
    response = httpx.post(f"{url}/get_weather", json={"town": "Oslo"})
    assert response.status_code == 422 and "city" in response.json()["error"]["message"]


def cut_off_row(end: str | None) -> dict:
    """An answer repeated until the output-token limit stopped it (the response says so)."""
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "donald-" * 50}]}
    response = {
        "id": "r",
        "output": [answer],
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
    }
    row = {"responses_create_params": {"input": "weather?"}, "response": response}
    return row if end is None else row | {"episode_end": end}


def test_an_episode_cut_off_at_the_token_limit_scores_zero_with_its_reason(serve):
    url = serve(make_server().setup_webserver())
    for row in (cut_off_row(None), cut_off_row("max_output_tokens")):  # read off the response, or as written
        verified = httpx.post(f"{url}/verify", json=row).json()
        assert verified["reward"] == 0.0 and "max_output_tokens" in verified["reason"]
    stopped = cut_off_row("deadline") | {"response": {"id": "r", "output": []}}
    assert httpx.post(f"{url}/verify", json=stopped).json()["reward"] == 0.0
    done = httpx.post(
        f"{url}/verify", json={"responses_create_params": {"input": "x"}, "response": {"id": "r", "output": []}}
    )
    assert done.json()["reward"] == 1.0 and done.json()["reason"] is None


def test_a_rollout_the_model_ran_into_the_token_limit_scores_zero_through_the_agent():
    with ScriptedOpenAI(lambda body: Turn(text="donald-" * 50, finish_length=True)) as upstream:
        with ThreadedServer.of(make_server()) as resources:
            agent = SimpleAgent(
                config=SimpleAgentConfig(
                    name="agent",
                    resources_server={"type": "resources_servers", "name": "env"},
                    model_server={"type": "responses_api_models", "name": "policy_model"},
                ),
                server_client=registry_client(
                    {
                        "env": ("resources_servers", resources.url),
                        "policy_model": ("responses_api_models", upstream.url.removesuffix("/v1")),
                    }
                ),
            )
            with ThreadedServer.of(agent) as running:
                task = {"responses_create_params": {"input": [{"role": "user", "content": "weather in Oslo?"}]}}
                row = httpx.post(f"{running.url}/run", json=task, timeout=30).json()
    assert row["episode_end"] == "max_output_tokens"
    assert row["reward"] == 0.0 and "cut off (max_output_tokens)" in row["reason"]
