"""NeMo Gym's collector posts each rollout's row to the agent's `/run` with `_ng_task_index` and
`_ng_rollout_index` in it, so an agent or environment can read them from the request (NeMo Gym's
genrm_compare keys its comparison cohorts on them). Ours sends them the same way, keeps them in the
written row, and writes the row's bytes as before (the indices last, after `agent_ref`)."""

from __future__ import annotations

import asyncio
import json
from contextlib import contextmanager
from pathlib import Path

from fastapi import Request
from pydantic import ConfigDict, Field

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.global_config import ROLLOUT_INDEX_KEY_NAME, TASK_INDEX_KEY_NAME
from nemo_gym.rollouts import CollectionPolicy, CollectionSpec, RolloutCollector
from nemo_gym.rollouts.file_collection import FileCollection
from nemo_gym.server_utils import SESSION_ID_KEY
from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from responses_api_agents.simple_agent.app import SimpleAgent, SimpleAgentConfig

ENV = "cohort_keys"


class CohortSeedRequest(BaseSeedSessionRequest):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    task_index: int | None = Field(default=None, alias=TASK_INDEX_KEY_NAME)
    rollout_index: int | None = Field(default=None, alias=ROLLOUT_INDEX_KEY_NAME)


class CohortVerifyRequest(BaseVerifyRequest):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    task_index: int | None = Field(default=None, alias=TASK_INDEX_KEY_NAME)
    rollout_index: int | None = Field(default=None, alias=ROLLOUT_INDEX_KEY_NAME)


class CohortVerifyResponse(BaseVerifyResponse):
    model_config = ConfigDict(extra="allow")

    cohort_key: str | None = None
    seeded_key: str | None = None


class CohortKeysServer(SimpleResourcesServer):
    """Written as NeMo Gym environments are: keys per-rollout state on the indices of the request."""

    config: BaseResourcesServerConfig
    seeded: dict[str, str] = {}

    async def seed_session(self, request: Request, body: CohortSeedRequest) -> BaseSeedSessionResponse:
        if body.task_index is not None:
            self.seeded[request.session[SESSION_ID_KEY]] = f"task_idx::{body.task_index}::{body.rollout_index}"
        return BaseSeedSessionResponse()

    async def verify(self, request: Request, body: CohortVerifyRequest) -> CohortVerifyResponse:
        key = None if body.task_index is None else f"task_idx::{body.task_index}::{body.rollout_index}"
        return CohortVerifyResponse(
            **body.model_dump(by_alias=True),
            reward=1.0 if key is not None else 0.0,
            cohort_key=key,
            seeded_key=self.seeded.get(request.session[SESSION_ID_KEY]),
        )


@contextmanager
def cohort_stack():
    server = CohortKeysServer(config=BaseResourcesServerConfig(name=ENV), server_client=registry_client({}))
    with ScriptedOpenAI() as upstream, ThreadedServer.of(server) as resources:
        agent = SimpleAgent(
            config=SimpleAgentConfig(
                name="agent",
                resources_server={"type": "resources_servers", "name": ENV},
                model_server={"type": "responses_api_models", "name": "policy_model"},
            ),
            server_client=registry_client(
                {
                    ENV: ("resources_servers", resources.url),
                    "policy_model": ("responses_api_models", upstream.url.removesuffix("/v1")),
                }
            ),
        )
        with ThreadedServer.of(agent) as running:
            yield registry_client({"agent": ("responses_api_agents", running.url)})


def collect(client, tasks: Path, output: Path) -> None:
    collection = FileCollection(
        CollectionSpec(agent_name="agent", input_jsonl_fpath=str(tasks), num_repeats=2), output, aggregate=False
    )

    async def go():
        collector = RolloutCollector(client, "agent", CollectionPolicy(concurrency=2))
        try:
            return await collection.run(collector)
        finally:
            await collector.server_client.aclose()

    with collection:
        assert asyncio.run(go()).complete


def test_an_environment_reads_the_rollout_indices_from_the_run_request(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"responses_create_params": {"input": f"q{i}"}}) + "\n" for i in range(2)))
    output = tmp_path / "rows.jsonl"
    with cohort_stack() as client:
        collect(client, tasks, output)
    rows = sorted((json.loads(line) for line in output.read_text().splitlines()), key=lambda r: r["cohort_key"] or "")
    pairs = [(row[TASK_INDEX_KEY_NAME], row[ROLLOUT_INDEX_KEY_NAME]) for row in rows]
    assert sorted(pairs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # Both seed_session and verify saw the pair the row is written under.
    assert [row["cohort_key"] for row in rows] == [f"task_idx::{t}::{r}" for t, r in pairs]
    assert [row["seeded_key"] for row in rows] == [row["cohort_key"] for row in rows]
    assert all(row["reward"] == 1.0 for row in rows)
    # The row keeps its layout: verify echoed the indices, yet they are written last, once.
    for line in output.read_text().splitlines():
        keys = list(json.loads(line))
        assert keys[-4:] == ["agent_ref", TASK_INDEX_KEY_NAME, ROLLOUT_INDEX_KEY_NAME, "_ng_group_size"]
        assert line.count(f'"{TASK_INDEX_KEY_NAME}"') == 1
