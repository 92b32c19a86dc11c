"""Without NEMO_GYM_RAY_ADDRESS nothing imports Ray: code_gen and math_with_judge verify on local workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Both servers start, verify one right answer each, and report which modules were loaded.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import httpx
    from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
    from resources_servers.code_gen.app import CodeGenConfig, CodeGenServer
    from resources_servers.math_with_judge.app import MathWithJudgeConfig, MathWithJudgeServer

    def answer(text):
        content = [{"type": "output_text", "text": text, "annotations": []}]
        return {"id": "r", "output": [{"type": "message", "role": "assistant", "id": "m", "content": content}]}

    rewards, backends = {}, {}
    for name, server, task, text in [
        ("code_gen", CodeGenServer, {"verifier_metadata": {"unit_tests": {"inputs": ["2 3"], "outputs": ["5"]}}},
         "```python\\na, b = map(int, input().split())\\nprint(a + b)\\n```"),
        ("math_with_judge", MathWithJudgeServer, {"expected_answer": "5"}, "\\\\boxed{5}"),
    ]:
        port = free_port()
        config = {"code_gen": CodeGenConfig, "math_with_judge": MathWithJudgeConfig}[name]
        app = server(config=config(name=name, port=port, verification_workers=1) if name == "math_with_judge"
                     else config(name=name, port=port), server_client=registry_client({}))
        with ThreadedServer(app.setup_webserver(), port=port) as running:
            row = {"responses_create_params": {"input": "task"}, "response": answer(text), **task}
            rewards[name] = httpx.post(running.url + "/verify", json=row, timeout=120).json()["reward"]
            executor = app._executor if name == "code_gen" else app.grading
            backends[name] = executor.backend
    ray_modules = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
    print(json.dumps({"rewards": rewards, "backends": backends, "ray_modules": ray_modules}))
    """
)


def test_without_the_cluster_address_verification_is_local_and_ray_is_never_imported():
    env = {key: value for key, value in os.environ.items() if key != "NEMO_GYM_RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rewards"] == {"code_gen": 1.0, "math_with_judge": 1.0}
    assert report["backends"] == {"code_gen": "local", "math_with_judge": "local"}
    assert report["ray_modules"] == []


def test_executors_read_the_variable_the_ray_launcher_sets():
    from nemo_gym.compute import RAY_ADDRESS_ENV
    from nemo_gym.servers.launcher_link import RAY_ADDRESS_ENV as set_by_the_launcher

    assert RAY_ADDRESS_ENV == set_by_the_launcher == "NEMO_GYM_RAY_ADDRESS"
