"""NeMo Gym's `nemo_gym.server_utils` import path: calling other servers from an environment.

    response = await self.server_client.post(server_name="policy_model", url_path="/v1/responses", json=params)
    await raise_for_status(response)
    data = await get_response_json(response)       # or: await response.json()

`ServerClient` is our client (`nemo_gym.client.ServerClient`: names resolved through the head server,
pooled connections, bounded retries, replicas) with NeMo Gym's call shape: `post`/`get`/`request`
take `server_name=`, `url_path=` and aiohttp's keyword arguments (`json` may be a pydantic model,
sent as its set fields), and return a response read like aiohttp's (`status`, `ok`, `await
response.json()`, `await response.read()`, `cookies`). An error status raises
`nemo_gym.errors.HTTPStatusError` from `raise_for_status`; our servers answer it as 502/424.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from nemo_gym.client import HttpClient, HttpResult, Timeouts
from nemo_gym.client import ServerClient as _OurServerClient
from nemo_gym.errors import HTTPStatusError
from nemo_gym.rollout_correlation import apply_rollout_prefix, rollout_path_prefix
from nemo_gym.servers.session import SESSION_ID_KEY

__all__ = [
    "SESSION_ID_KEY",
    "ClientResponse",
    "ServerStatus",
    "apply_rollout_prefix",
    "get_first_server_config_dict",
    "is_nemo_gym_fastapi_entrypoint",
    "is_nemo_gym_fastapi_worker",
    "rollout_path_prefix",
    "ServerClient",
    "get_response_json",
    "get_server_url",
    "raise_for_status",
    "request",
]

ServerStatus = Literal["success", "connection_error", "timeout", "unknown_error"]

_REQUEST_KEYWORDS = frozenset({"json", "headers", "cookies", "params", "retry", "timeouts", "timeout"})
_CONNECT_S = 30.0


def _as_json(value: Any) -> Any:
    # As NeMo Gym's client: a model is sent as the fields that were set, so defaults stay the server's.
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    return value


def _as_timeouts(timeout: Any) -> Timeouts | None:
    """aiohttp's `timeout=`: seconds for the whole request, or a `ClientTimeout`-like object (`total`,
    `connect`, `sock_read`), as our `Timeouts`. None keeps the client's own deadlines."""
    if timeout is None:
        return None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        return Timeouts(connect_s=min(_CONNECT_S, timeout), read_s=timeout, total_s=timeout)
    total = getattr(timeout, "total", None)
    connect = getattr(timeout, "connect", None) or getattr(timeout, "sock_connect", None)
    read = getattr(timeout, "sock_read", None)
    defaults = Timeouts()
    return Timeouts(
        connect_s=connect or min(defaults.connect_s, total or defaults.connect_s),
        read_s=read or total or defaults.read_s,
        total_s=total,
    )


def _request_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - _REQUEST_KEYWORDS
    if unknown:
        raise TypeError(f"unsupported request argument(s): {', '.join(sorted(unknown))}")
    if "timeout" in kwargs:
        timeouts = _as_timeouts(kwargs.pop("timeout"))
        if timeouts is not None and "timeouts" not in kwargs:
            kwargs["timeouts"] = timeouts
    if "json" in kwargs:
        kwargs["json"] = _as_json(kwargs["json"])
    cookies = kwargs.get("cookies")
    if cookies is not None and not isinstance(cookies, Mapping):
        kwargs["cookies"] = {morsel.key: morsel.value for morsel in cookies.values()}
    return kwargs


class _Content:
    def __init__(self, body: bytes):
        self._body = body

    async def read(self) -> bytes:
        return self._body


class ClientResponse:
    """A fully read response, read the way aiohttp's `ClientResponse` is."""

    __slots__ = ("_result",)

    def __init__(self, result: HttpResult):
        self._result = result

    @property
    def status(self) -> int:
        return self._result.status

    @property
    def ok(self) -> bool:
        return self._result.ok

    @property
    def headers(self) -> Mapping[str, str]:
        return self._result.headers

    @property
    def cookies(self) -> dict[str, str]:
        return self._result.cookies

    @property
    def url(self) -> str:
        return self._result.url

    @property
    def content(self) -> _Content:
        return _Content(self._result.body)

    async def read(self) -> bytes:
        return self._result.body

    async def text(self) -> str:
        return self._result.text

    async def json(self, **_: Any) -> Any:
        return self._result.json()

    def raise_for_status(self) -> None:
        self._result.raise_for_status()

    def release(self) -> None:
        """Nothing to release: the body is already read."""

    async def __aenter__(self) -> ClientResponse:
        # `async with await request(...) as response:` as with aiohttp.
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class ServerClient(_OurServerClient):
    """Our `ServerClient` with NeMo Gym's call shape (see the module docstring)."""

    async def request(  # type: ignore[override]
        self, server_name: str, url_path: str, method: str = "POST", **kwargs: Any
    ) -> ClientResponse:
        result = await super().request(server_name, "/" + url_path.lstrip("/"), method, **_request_kwargs(kwargs))
        return ClientResponse(result)

    async def post(self, server_name: str, url_path: str, **kwargs: Any) -> ClientResponse:  # type: ignore[override]
        return await self.request(server_name, url_path, "POST", **kwargs)

    async def get(self, server_name: str, url_path: str, **kwargs: Any) -> ClientResponse:  # type: ignore[override]
        return await self.request(server_name, url_path, "GET", **kwargs)

    @property
    def global_config_dict(self) -> Any:
        """NeMo Gym's attribute: this process's global config (see `nemo_gym.global_config`)."""
        from nemo_gym.global_config import get_global_config_dict

        return get_global_config_dict()

    @staticmethod
    def _build_server_base_url(server_config_dict: Mapping[str, Any]) -> str:
        return f"http://{server_config_dict['host']}:{server_config_dict['port']}"

    def poll_for_status(self, server_name: str) -> ServerStatus:
        """Whether server `server_name` answers at all (any status counts), as NeMo Gym's blocking probe:
        "success", "connection_error", "timeout" or "unknown_error". Environments call it in
        `setup_webserver`, before serving, to wait for their judge."""
        import httpx  # here, not at import: every environment's server imports this module, few call this

        try:
            info = self._registry.get(server_name)
            url = info.url if info is not None else get_server_url(server_name)
            httpx.get(url, timeout=5, trust_env=False)
            return "success"
        except httpx.ConnectError:
            return "connection_error"
        except httpx.TimeoutException:
            return "timeout"
        except Exception:
            return "unknown_error"

    @classmethod
    def from_client(cls, client: _OurServerClient) -> ServerClient:
        """The same head server and registry, with NeMo Gym's call shape."""
        if isinstance(client, cls):
            return client
        return cls(client.head_url, registry=list(client._registry.values()))


async def raise_for_status(response: Any) -> None:
    """Raise `HTTPStatusError` (status, excerpt of the body) unless the status is 2xx.

    Any other aiohttp-like response is judged as NeMo Gym does: by `ok`, its `raise_for_status()`
    called only when `ok` is false (environment tests hand in mocks of aiohttp's response)."""
    if isinstance(response, (ClientResponse, HttpResult)):
        response.raise_for_status()
        return
    if not response.ok:
        await response.content.read()
        response.raise_for_status()


async def get_response_json(response: Any) -> Any:
    """The response body parsed as JSON (`InvalidResponseError` if it is not JSON).

    Any other aiohttp-like response is read as NeMo Gym reads it: `orjson.loads(await response.read())`
    (environment tests hand in mocks whose `read` returns the body as bytes or str)."""
    if isinstance(response, ClientResponse):
        return await response.json()
    if isinstance(response, HttpResult):
        return response.json()
    return orjson.loads(await response.read())


# One pooled client per event loop for `request()`: a client belongs to the loop it was made in.
_LOOP_CLIENTS: dict[asyncio.AbstractEventLoop, HttpClient] = {}


async def request(method: str, url: str, _internal: bool = False, **kwargs: Any) -> ClientResponse:
    """Send one HTTP request to a URL (not a server name) on a shared pooled client."""
    loop = asyncio.get_running_loop()
    client = _LOOP_CLIENTS.get(loop)
    if client is None:
        for stale in [other for other in _LOOP_CLIENTS if other.is_closed()]:
            del _LOOP_CLIENTS[stale]
        client = _LOOP_CLIENTS[loop] = HttpClient()
    result = await client.request(method, url, **_request_kwargs(dict(kwargs)))
    return ClientResponse(result)


def get_server_url(server_name: str) -> str:
    """`http://host:port` of a server instance, from the global config (`nemo_gym.global_config`)."""
    from nemo_gym.global_config import get_first_server_config_dict, get_global_config_dict

    block = get_first_server_config_dict(get_global_config_dict(), server_name)
    return f"http://{block['host']}:{block['port']}"


def is_nemo_gym_fastapi_worker() -> bool:
    """True in a uvicorn worker process NeMo Gym's launcher started for a multi-worker server (it sets
    IS_NEMO_GYM_FASTAPI_WORKER=1). Our launcher serves each process's app itself and never sets it."""
    return os.environ.get("IS_NEMO_GYM_FASTAPI_WORKER") == "1"


def is_nemo_gym_fastapi_entrypoint(file: str) -> bool:
    """True when `file` is the app module such a worker imports, so its `app = ...run_webserver()` line
    runs; under our launcher, False, and the `if __name__ == "__main__"` branch starts the server."""
    entrypoint = os.environ.get("IS_NEMO_GYM_FASTAPI_ENTRYPOINT")
    return is_nemo_gym_fastapi_worker() and bool(entrypoint) and file.endswith(str(entrypoint))


def get_first_server_config_dict(global_config_dict: Any, server_name: str) -> Any:
    """A server instance's own config block (host, port, its settings), as `nemo_gym.global_config`'s."""
    from nemo_gym.global_config import get_first_server_config_dict as from_global_config

    return from_global_config(global_config_dict, server_name)


__all__ += ["HTTPStatusError", "apply_rollout_prefix", "rollout_path_prefix"]
