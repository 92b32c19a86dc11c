"""`ng_status [+json=true]`: the servers the head server knows, each asked for its health (NeMo Gym's
`gym env status`). Exit code 0 when every server answers, 1 when one does not or nothing runs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import psutil
from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.client import ServerInfo
from nemo_gym.config import load_global_config
from nemo_gym.errors import InvalidResponseError, ServerUnreachableError

PROBE_TIMEOUT_S = 2.0


class StatusConfig(BaseModel):
    """List the running servers (from the head server: head_server.host/port, as ng_run was given them) with
    their kind, URL, process id, uptime and whether their /health answers. Exit code 1 when a server does not
    answer or no head server runs."""

    json_output: bool = Field(False, alias="json", description="Print one JSON list instead of text.")


def _get(url: str, timeout: float) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy
    with opener.open(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def _health(url: str) -> str:
    """success, connection_error, timeout or unknown_error (NeMo Gym's words)."""
    try:
        _get(f"{url}/health", PROBE_TIMEOUT_S)
        return "success"
    except TimeoutError:
        return "timeout"
    except urllib.error.URLError as error:
        return "timeout" if isinstance(error.reason, TimeoutError) else "connection_error"
    except (OSError, ValueError):
        return "unknown_error"


def _uptime_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return max(0.0, time.time() - psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None  # on another host, or gone


def _uptime_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{int(days)}d {int(hours)}h {int(minutes)}m {secs:.1f}s"


def server_status(head_url: str) -> list[dict[str, Any]]:
    """One dict per server replica: its registry row, `status` and `uptime_seconds`."""
    try:
        rows = _get(f"{head_url}/server_instances", 5.0)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise ServerUnreachableError(
            f"no head server answers at {head_url} ({getattr(error, 'reason', error)}); start the servers with "
            f"ng_run, or point at its address with +head_server.host=... +head_server.port=...",
            connect_failed=True,
        ) from None
    except ValueError as error:
        raise InvalidResponseError(f"{head_url}/server_instances did not answer JSON ({error})") from None
    servers = []
    for row in rows:
        info = ServerInfo.model_validate(row)
        servers.append(
            info.model_dump(mode="json") | {"status": _health(info.url), "uptime_seconds": _uptime_s(info.pid)}
        )
    return servers


def status(argv: list[str]) -> int:
    config = load_global_config(argv)
    params: StatusConfig = read_command_config(StatusConfig, config, "ng_status")
    servers = server_status(config.head_url)
    healthy = sum(1 for server in servers if server["status"] == "success")
    if params.json_output:
        print(json.dumps(servers), flush=True)
    else:
        print(f"Servers registered with the head server at {config.head_url}:", flush=True)
        for number, server in enumerate(servers, start=1):
            mark = "ok  " if server["status"] == "success" else "DOWN"
            replica = f" replica {server['replica']}" if server["replica"] else ""
            print(
                f"[{number}] {mark} {server['name']}{replica} ({server['server_type']}/{server['implementation']})  "
                f"{server['url']}  pid {server['pid'] or '-'}  up {_uptime_text(server['uptime_seconds'])}"
                + ("" if server["status"] == "success" else f"  ({server['status']})"),
                flush=True,
            )
        print(f"{len(servers)} servers found ({healthy} healthy, {len(servers) - healthy} unhealthy)", flush=True)
    return 0 if healthy == len(servers) else 1


def main(argv: list[str] | None = None) -> None:
    run_command("ng_status", status, StatusConfig, argv)


if __name__ == "__main__":
    main()
