"""Score verify payloads with an environment's own server class, run by another project's `nemo_gym`.

Run by `ng_compat_survey.py --reference-venv <venv>` with that venv's interpreter, where NeMo Gym itself
is installed (`pip install -e <NeMo Gym checkout>`): a row whose reward here differs from the stored one
is scored again by NeMo Gym's current code, to tell a stale stored reward from a difference of ours.
The server is built the way NeMo Gym's own environment tests build it (the config class its `config`
field names, a stand-in server client, `setup_webserver()`, FastAPI's TestClient), so no port, no
head server and no model are involved: only environments whose verify calls no other server apply.

    <venv>/bin/python scripts/ng_reference_verify.py <project> <env> <entrypoint> <server config JSON>

`<project>` holds `resources_servers/<env>/`; each stdin line is one verify payload (JSON), each stdout
line `{"reward": x}` or `{"error": "..."}` for it, in order. Exit 2 when the server cannot be built.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

RUN_CALL = re.compile(r"(\w+)\.run_webserver\(\)")


def server_class(module: Any, source: str) -> type:
    """The class the entrypoint runs (`X.run_webserver()` under `__main__`), else its only concrete
    resources server class."""
    from nemo_gym.base_resources_server import SimpleResourcesServer

    named = RUN_CALL.findall(source)
    if named and isinstance(getattr(module, named[-1], None), type):
        return getattr(module, named[-1])
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, SimpleResourcesServer)
        and value.__module__ == module.__name__
        and not inspect.isabstract(value)
    ]
    if len(found) != 1:
        raise LookupError(f"cannot tell which server class {module.__name__} runs ({len(found)} candidates)")
    return found[0]


def build_server(project: Path, env: str, entrypoint: str, body: dict[str, Any]) -> Any:
    from nemo_gym.server_utils import ServerClient

    folder = project / "resources_servers" / env
    sys.path[:0] = [str(folder), str(project)]  # as `python <entrypoint>` from the folder, the project on the path
    module = importlib.import_module(entrypoint.removesuffix(".py").replace("/", "."))
    cls = server_class(module, (folder / entrypoint).read_text())
    config_cls = cls.model_fields["config"].annotation
    values = {**body, "host": "127.0.0.1", "port": 0, "entrypoint": entrypoint, "name": f"{env}_reference"}
    declared = set(config_cls.model_fields)
    if config_cls.model_config.get("extra") != "allow":
        values = {key: value for key, value in values.items() if key in declared}
    config = config_cls.model_validate(values)
    return cls(config=config, server_client=MagicMock(spec=ServerClient))


def score(client: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """What the survey does against our stack: seed the session, replay the rollout's tool calls, verify."""
    client.cookies.clear()
    task = {key: value for key, value in payload.items() if key not in ("response", "reward")}
    client.post("/seed_session", json=task)
    output = (payload.get("response") or {}).get("output") or []
    for item in output if isinstance(output, list) else []:
        if isinstance(item, dict) and item.get("type") == "function_call" and item.get("name"):
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except ValueError:
                continue
            client.post(f"/{item['name']}", json=arguments)
    answer = client.post("/verify", json=payload)
    if answer.status_code != 200:
        return {"error": f"HTTP {answer.status_code} {answer.text[:200]}"}
    reward = answer.json().get("reward")
    return {"reward": reward} if isinstance(reward, (int, float)) else {"error": "no numeric reward"}


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: ng_reference_verify.py <project> <env> <entrypoint> <server config JSON>", file=sys.stderr)
        return 2
    project, env, entrypoint, body = Path(argv[0]), argv[1], argv[2], json.loads(argv[3])
    try:
        server = build_server(project, env, entrypoint, body)
        from fastapi.testclient import TestClient

        client = TestClient(server.setup_webserver())
    except Exception as error:  # any failure to build it is one line for the survey's table
        print(f"reference server: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            result = score(client, json.loads(line))
        except Exception as error:  # one row's failure is that row's answer
            result = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
