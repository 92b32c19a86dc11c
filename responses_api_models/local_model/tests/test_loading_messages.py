"""local_model tells the person watching when it starts loading its weights and when it is ready."""

from __future__ import annotations

import re

import httpx
import pytest

from nemo_gym.testing import ThreadedServer, registry_client
from responses_api_models.local_model.app import LocalModel, LocalModelConfig

pytest.importorskip("xllamacpp", reason="the local model needs `pip install -e .[local]`")


def test_loading_and_ready_are_announced_with_the_time_taken(capsys):
    model = LocalModel(config=LocalModelConfig(name="policy_model", n_parallel=1), server_client=registry_client({}))
    with ThreadedServer(model.setup_webserver()) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
    printed = capsys.readouterr().err
    loading = printed.index("local_model: loading weights SmolLM2-135M-Instruct.Q4_1.gguf")
    ready = re.search(
        r"local_model: SmolLM2-135M-Instruct\.Q4_1 ready in \d+\.\d s; it answers 1 request\(s\) at a time", printed
    )
    assert ready is not None and loading < ready.start()
