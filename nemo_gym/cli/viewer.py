"""`ng_viewer +jsonl_fpath=<rollouts.jsonl>`: look at rollouts in a browser, served from 127.0.0.1.

Indexing starts before the server does and runs on a thread, so the first page is there at once
even for a file of 100,000 rows; the page shows the progress until the index is complete.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import uvicorn
from pydantic import BaseModel, Field

from nemo_gym.cli.main import read_command_config, run_command
from nemo_gym.config import load_global_config
from nemo_gym.errors import InputDataError, PortConflictError
from nemo_gym.viewer import RolloutIndex, ViewerRuns, build_viewer_app

DEFAULT_PORT = 7860


class ViewerConfig(BaseModel):
    """Serve a page that shows a rollouts file: a sortable, filterable table of rollouts, each
    rollout's whole conversation, the aggregate metrics with pass@k and reward charts, the failures
    file beside it, and (with +compare_jsonl_fpath) a per-task comparison with a second run."""

    jsonl_fpath: str = Field(description="Rollouts written by ng_collect_rollouts (one row per line).")
    compare_jsonl_fpath: str | None = Field(None, description="A second run of the same tasks to compare with.")
    failures_jsonl_fpath: str | None = Field(
        None, description="Failures file to show (default: <stem>_failures.jsonl beside jsonl_fpath)."
    )
    host: str = Field("127.0.0.1", description="Address to listen on; keep 127.0.0.1 unless you mean to share it.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Further names the viewer answers to besides host (e.g. a name that resolves to this "
        "machine); a request naming another Host, or from another site's page, is refused.",
    )
    port: int | None = Field(
        None, ge=0, le=65535, description=f"Port (null = {DEFAULT_PORT}, or a free one if taken; 0 = any free port)."
    )


def bind(host: str, port: int | None) -> socket.socket:
    """A listening socket; an explicitly asked port that is taken is the user's to change."""
    candidates = [DEFAULT_PORT, 0] if port is None else [port]
    for candidate in candidates:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as error:
            sock.close()
            if error.errno == errno.EADDRINUSE and port is None:
                continue
            if error.errno == errno.EADDRINUSE:
                raise PortConflictError(
                    f"port {port} on {host} is in use; pass another +port= (0 = any free port)"
                ) from None
            raise PortConflictError(f"cannot listen on {host}:{candidate}: {error.strerror}") from None
        sock.listen(128)
        return sock
    raise PortConflictError(f"no free port on {host}")  # unreachable: port 0 always binds


def serve(argv: list[str]) -> int:
    config = load_global_config(argv)
    params: ViewerConfig = read_command_config(ViewerConfig, config, "ng_viewer")
    runs = ViewerRuns(
        a=RolloutIndex(params.jsonl_fpath).start(),
        b=RolloutIndex(params.compare_jsonl_fpath).start() if params.compare_jsonl_fpath else None,
        failures_path=Path(params.failures_jsonl_fpath) if params.failures_jsonl_fpath else None,
    )
    if params.failures_jsonl_fpath and not Path(params.failures_jsonl_fpath).is_file():
        raise InputDataError("failures file does not exist", path=params.failures_jsonl_fpath)
    sock = bind(params.host, params.port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"ng_viewer: {runs.a.path} at http://{shown_host}:{port}/  (Ctrl+C to stop)", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            build_viewer_app(runs, params.host, params.allowed_hosts),
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    server.run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command("ng_viewer", serve, ViewerConfig, argv)


if __name__ == "__main__":
    main()
