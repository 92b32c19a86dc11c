"""Servers answer our clients, not web pages: a page in the user's browser cannot drive a server (a
text/plain or form POST, a foreign Origin, a DNS-rebinding Host), and a session cookie of odd bytes
is no session rather than a 500. Each case runs against the tutorial's servers on loopback (resources,
simple agent, openai_model) in front of a scripted upstream that records every call's Bearer key."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from nemo_gym.config import load_global_config
from nemo_gym.errors import ConfigError
from nemo_gym.launcher import head_allowed_hosts
from nemo_gym.replica_routing import ReplicaSet, replica_cookie_name
from nemo_gym.servers.head import Registry, build_head_app
from nemo_gym.servers.request_guard import accepted_host_names, host_name, machine_names
from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from resources_servers.example_single_tool_call.app import ExampleSingleToolCallConfig, ExampleSingleToolCallServer
from responses_api_agents.simple_agent.app import SimpleAgent, SimpleAgentConfig
from responses_api_models.openai_model.app import OpenAIModel, OpenAIModelConfig

KEY = "sk-guard-test-key-0123456789"
TASK = json.loads(Path("resources_servers/example_single_tool_call/data/example.jsonl").read_text().splitlines()[0])
EVIL = "http://evil.example"
RESOURCES_COOKIE = "ExampleSingleToolCallServer___resources"


class KeyRecordingUpstream(ScriptedOpenAI):
    """The scripted upstream, also recording the Authorization header of every call it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.auth: list[str | None] = []

    async def _responses(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization"))
        return await super()._responses(request)

    async def _chat(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization"))
        return await super()._chat(request)


@pytest.fixture(scope="module")
def upstream() -> Iterator[KeyRecordingUpstream]:
    server = KeyRecordingUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(upstream: KeyRecordingUpstream) -> Iterator[dict[str, str]]:
    ports = {name: free_port() for name in ("resources", "model", "agent")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    def client():
        return registry_client(
            {"resources": ("resources_servers", urls["resources"]), "model": ("responses_api_models", urls["model"])}
        )

    servers = {
        "resources": ExampleSingleToolCallServer(
            config=ExampleSingleToolCallConfig(name="resources", port=ports["resources"]), server_client=client()
        ),
        "model": OpenAIModel(
            config=OpenAIModelConfig(
                name="model", port=ports["model"], openai_base_url=upstream.url, openai_api_key=KEY, openai_model="m"
            ),
            server_client=client(),
        ),
        "agent": SimpleAgent(
            config=SimpleAgentConfig(
                name="agent",
                port=ports["agent"],
                resources_server={"type": "resources_servers", "name": "resources"},
                model_server={"type": "responses_api_models", "name": "model"},
            ),
            server_client=client(),
        ),
    }
    running = [ThreadedServer.of(server, port=ports[name]).start() for name, server in servers.items()]
    yield urls
    for server in running:
        server.stop()


@pytest.fixture
def quiet_upstream(upstream: KeyRecordingUpstream) -> KeyRecordingUpstream:
    """The upstream with its records cleared, so a test sees only the calls it caused."""
    upstream.requests.clear()
    upstream.auth.clear()
    return upstream


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, bytes, str]:
    """Send one request as raw bytes (header values a client library would refuse to send);
    returns (status, body, the whole head of the answer)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode("utf-8") + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), payload, head_bytes.decode("latin-1")


# ---- part 5: cross-site requests --------------------------------------------------------------------
def test_the_curl_reproduction_never_reaches_the_upstream_nor_spends_the_key(stack, quiet_upstream):
    # curl -H 'Content-Type: text/plain' -H 'Origin: http://evil.example' --data '{"input":"hello"}' <model>/v1/responses
    response = httpx.post(
        f"{stack['model']}/v1/responses",
        content=b'{"input":"hello"}',
        headers={"Content-Type": "text/plain", "Origin": EVIL},
    )
    assert response.status_code in (403, 415)
    assert response.json()["error"]["message"]
    assert quiet_upstream.requests == [] and quiet_upstream.auth == []


@pytest.mark.parametrize(
    "server, path, body",
    [
        ("model", "/v1/responses", {"input": "hello"}),
        ("model", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hello"}]}),
        ("agent", "/run", TASK),
        ("resources", "/verify", TASK | {"response": {"id": "r", "output": []}}),
        ("resources", "/seed_session", TASK),
    ],
)
def test_a_page_cannot_post_plain_text_or_a_form_nor_post_json_from_another_origin(
    stack, quiet_upstream, server, path, body
):
    url = f"{stack[server]}{path}"
    plain = httpx.post(url, content=json.dumps(body).encode(), headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert "application/json" in plain.json()["error"]["message"]
    form = httpx.post(url, data={"input": "hello"})
    assert form.status_code == 415
    no_type = httpx.post(url, content=json.dumps(body).encode(), headers={"Content-Type": ""})
    assert no_type.status_code == 415
    foreign = httpx.post(url, json=body, headers={"Origin": EVIL})
    assert foreign.status_code == 403
    assert "allowed_hosts" in foreign.json()["error"]["message"]
    # Another page on the same machine is a foreign origin too: it is not this server's port.
    other_port = httpx.post(url, json=body, headers={"Origin": "http://127.0.0.1:3000"})
    assert other_port.status_code == 403
    assert httpx.post(url, json=body, headers={"Origin": "null"}).status_code == 403
    assert quiet_upstream.requests == [] and quiet_upstream.auth == []


@pytest.mark.parametrize("server", ["model", "agent", "resources"])
def test_a_dns_rebinding_host_is_refused_naming_the_setting(stack, quiet_upstream, server):
    url = stack[server]
    path, body = {"model": ("/v1/responses", {"input": "hi"}), "agent": ("/run", TASK)}.get(server, ("/verify", TASK))
    port = url.rsplit(":", 1)[1]
    response = httpx.post(f"{url}{path}", json=body, headers={"Host": f"evil.example:{port}"})
    assert response.status_code == 421
    assert "allowed_hosts" in response.json()["error"]["message"]
    # With the Origin such a page sends (its own, which the browser thinks is same-origin): refused all the same.
    response = httpx.post(
        f"{url}{path}", json=body, headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    )
    assert response.status_code == 421
    assert httpx.get(f"{url}/health", headers={"Host": "evil.example"}).status_code == 421
    assert quiet_upstream.requests == [] and quiet_upstream.auth == []


def test_our_own_requests_pass(stack, quiet_upstream):
    # The agent's whole rollout: the collector's client (aiohttp, application/json, no Origin) to the
    # agent, and the agent's own calls to the model and the resources server.
    async def run() -> dict[str, Any]:
        client = registry_client({"agent": ("responses_api_agents", stack["agent"])})
        try:
            return (await client.post("agent", "/run", json=TASK)).json()
        finally:
            await client.aclose()

    row = asyncio.run(run())
    assert row["reward"] == 1.0
    assert quiet_upstream.auth and set(quiet_upstream.auth) == {f"Bearer {KEY}"}
    # A JSON body with a charset parameter, a page served by the server itself (same origin), and
    # every loopback name for a server bound to 127.0.0.1.
    port = stack["model"].rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}"):
        response = httpx.post(
            f"{stack['model']}/v1/responses",
            content=b'{"input": "hi"}',
            headers={"Content-Type": "application/json; charset=utf-8", "Host": host, "Origin": f"http://{host}"},
        )
        assert response.status_code == 200, response.text
    assert httpx.post(f"{stack['resources']}/seed_session").status_code == 200  # a POST without a body
    assert httpx.get(f"{stack['agent']}/health").status_code == 200


def test_allowed_hosts_lets_a_name_through():
    server = ExampleSingleToolCallServer(
        config=ExampleSingleToolCallConfig(name="resources", allowed_hosts=["gym-node-3.cluster.local"]),
        server_client=registry_client({}),
    )
    with ThreadedServer.of(server) as running:
        body = TASK | {"response": {"id": "r", "output": []}}
        named = httpx.post(f"{running.url}/verify", json=body, headers={"Host": "gym-node-3.cluster.local:8080"})
        assert named.status_code == 200 and named.json()["reward"] == 1.0
        from_page = httpx.post(
            f"{running.url}/verify",
            json=body,
            headers={"Host": "gym-node-3.cluster.local", "Origin": "https://gym-node-3.cluster.local"},
        )
        assert from_page.status_code == 200
        other = httpx.post(f"{running.url}/verify", json=body, headers={"Host": "gym-node-4.cluster.local"})
        assert other.status_code == 421


def test_the_head_server_refuses_a_foreign_host_and_answers_its_own():
    with ThreadedServer(build_head_app(Registry([]))) as running:
        assert httpx.get(f"{running.url}/server_instances").json() == []
        response = httpx.get(f"{running.url}/server_instances", headers={"Host": "evil.example"})
        assert response.status_code == 421 and "allowed_hosts" in response.json()["error"]["message"]


def test_a_server_bound_to_every_interface_answers_to_the_address_it_is_reached_by():
    server = ExampleSingleToolCallServer(
        config=ExampleSingleToolCallConfig(name="resources", host="0.0.0.0"), server_client=registry_client({})
    )
    with ThreadedServer.of(server, host="0.0.0.0") as running:
        port = running.port
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/health", headers={"Host": f"0.0.0.0:{port}"}).status_code == 200
        hostname = socket.gethostname()
        assert httpx.get(f"http://127.0.0.1:{port}/health", headers={"Host": f"{hostname}:{port}"}).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/health", headers={"Host": "evil.example"}).status_code == 421


def test_names_a_server_answers_to():
    assert host_name("[::1]:8000") == "::1" and host_name("Node-1.:80") == "node-1" and host_name("::1") == "::1"
    assert accepted_host_names("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    # Bound to a Ray node's address: that address only (and what allowed_hosts adds).
    assert accepted_host_names("10.0.0.7", ["gym.example"]) == {"10.0.0.7", "gym.example"}
    assert "localhost" in accepted_host_names("0.0.0.0") and "localhost" in accepted_host_names("::")
    assert socket.gethostname().lower() in machine_names()


# ---- part 6: odd headers are not a 500 --------------------------------------------------------------
def test_a_session_cookie_of_non_ascii_bytes_is_no_session_not_a_500(stack):
    url = stack["resources"]
    port = url.rsplit(":", 1)[1]
    head = (
        f"POST /seed_session HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 2\r\nCookie: {RESOURCES_COOKIE}=é.é\r\nConnection: close\r\n"
    )
    status, _, answer_head = raw_request(url, head, b"{}")
    assert status == 200
    # No session: a new one is issued.
    assert f"set-cookie: {RESOURCES_COOKIE}=".lower() in answer_head.lower()


def test_a_non_ascii_cookie_on_an_agent_run_is_a_fresh_rollout(stack):
    url = stack["agent"]
    port = url.rsplit(":", 1)[1]
    body = json.dumps(TASK).encode()
    head = (
        f"POST /run HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nCookie: {RESOURCES_COOKIE}=é.é; other=\xff\r\nConnection: close\r\n"
    )
    status, payload, _ = raw_request(url, head, body)
    assert status == 200, payload[:500]
    assert json.loads(payload)["reward"] == 1.0


def test_a_replica_cookie_of_odd_digits_pins_nothing():
    # '²' is a digit to str.isdigit() but not to int(): the agent's client raised ValueError (a 500).
    replicas = ReplicaSet("resources", [(0, "http://127.0.0.1:1"), (1, "http://127.0.0.1:2")])
    assert replicas.pinned({replica_cookie_name("resources"): "1"}) == 1
    assert replicas.pinned({replica_cookie_name("resources"): "²"}) is None
    assert replicas.pinned({replica_cookie_name("resources"): "١"}) is None  # an Arabic-Indic one


def test_head_server_allowed_hosts_is_read_from_the_config(tmp_path):
    config = load_global_config(["+head_server.allowed_hosts=[gym.example]"], project_root=tmp_path, cwd=tmp_path)
    assert head_allowed_hosts(config) == ["gym.example"]
    assert head_allowed_hosts(load_global_config([], project_root=tmp_path, cwd=tmp_path)) == []
    with pytest.raises(ConfigError, match="head_server.allowed_hosts must be a list"):
        head_allowed_hosts(
            load_global_config(["+head_server.allowed_hosts=gym.example"], project_root=tmp_path, cwd=tmp_path)
        )
