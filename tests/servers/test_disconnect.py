"""A client that disconnects cancels its handler on every server kind; one that waits gets its answer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from nemo_gym.servers.base import BaseServerConfig, SimpleServer
from nemo_gym.testing.inprocess import ThreadedServer, registry_client


class Question(BaseModel):
    text: str


class PatientServer(SimpleServer):
    """`/wait` awaits `seconds` and records whether it finished or was cancelled."""

    config: BaseServerConfig
    finished: list[str] = []
    cancelled: list[str] = []

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/wait")(self.wait)
        return app

    async def wait(self, body: Question) -> dict[str, Any]:
        try:
            await asyncio.sleep(float(body.text))
        except asyncio.CancelledError:
            self.cancelled.append(body.text)
            raise
        self.finished.append(body.text)
        return {"answer": body.text}


@pytest.fixture
def patient():
    server = PatientServer(config=BaseServerConfig(name="patient"), server_client=registry_client({}))
    server.finished, server.cancelled = [], []
    with ThreadedServer(server.setup_webserver()) as running:
        yield server, running.url


def wait_for(condition, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(condition())


def test_a_caller_that_gives_up_cancels_the_handler_quietly(patient, caplog):
    server, url = patient
    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/wait", json={"text": "60"}, timeout=httpx.Timeout(5, read=0.5))
        assert wait_for(lambda: server.cancelled == ["60"]), "the handler kept running after its caller left"
    assert server.finished == []
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_caller_that_waits_gets_its_answer_and_the_connection_is_reused(patient):
    server, url = patient
    with httpx.Client(timeout=10) as client:
        answers = [client.post(f"{url}/wait", json={"text": "0.05"}).json() for _ in range(3)]
        assert client.get(f"{url}/health").status_code == 200
    assert answers == [{"answer": "0.05"}] * 3
    assert server.cancelled == [] and server.finished == ["0.05"] * 3


def test_a_rejected_body_is_still_answered(patient):
    _, url = patient
    response = httpx.post(f"{url}/wait", json={"nope": 1}, timeout=10)
    assert response.status_code == 422 and "text" in response.json()["error"]["message"]
