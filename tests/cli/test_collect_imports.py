"""What the collector process loads: it talks HTTP to servers, it does not serve one, so it never
imports FastAPI, Starlette or uvicorn (about half a second of `ng_collect_rollouts` start-up, before
the first rollout is sent)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_the_collector_and_its_cli_load_no_web_framework():
    script = (
        "import sys\n"
        "import nemo_gym.cli.collect, nemo_gym.rollouts\n"
        "from nemo_gym.rollouts.quality import is_cut_off\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'fastapi', 'starlette', 'uvicorn'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_server_classes_still_import_from_the_servers_package():
    # The package resolves its names on first use; environment code imports them as before.
    from nemo_gym.servers import SESSION_ID_KEY, SimpleResourcesServer, SimpleResponsesAPIAgent
    from nemo_gym.servers.resources import SimpleResourcesServer as direct

    assert SimpleResourcesServer is direct and SESSION_ID_KEY == "session_id"
    assert SimpleResponsesAPIAgent.server_kind == "responses_api_agents"
