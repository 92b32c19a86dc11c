"""example_single_tool_call: the tool answers, and every completed episode scores 1.0."""

from __future__ import annotations

import httpx

from nemo_gym.testing.inprocess import registry_client
from resources_servers.example_single_tool_call.app import ExampleSingleToolCallConfig, ExampleSingleToolCallServer


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
