"""A model server's calls to its upstream (an OpenAI-compatible HTTP API): auth, retries, errors, shapes.

openai_model, vllm_model and azure_openai_model all call their upstream through `UpstreamClient`,
so the three agree on what a failure becomes:

  * retried here, per the config's `RetryPolicy` (`nemo_gym.retry`): refused or dropped
    connections, timeouts, 408, 429 and 5xx, with backoff and Retry-After;
  * a failure that survived its attempts, or an upstream 4xx (never retried: it would fail the same
    way), raises `HTTPStatusError` carrying the upstream's status, naming this server and the
    upstream URL, with a short excerpt of the upstream's message (the API key redacted, in case the
    upstream echoes it). The server's error handler answers 502 for a retryable status and 424 for
    the rest, so the collector retries the first and writes one failure record for the second;
  * an answer over `max_upstream_response_bytes` raises `ResponseTooLargeError` naming this server,
    the upstream URL and the cap, without holding more than the cap; it is not retried, and the
    server answers 424. A body that stops arriving for `read_idle_timeout_s`, or an attempt longer
    than `request_timeout_s`, is a `RequestTimeoutError` (retried like any timeout, then 502);
  * a 2xx whose body is not the shape promised (`output: [1, 2, 3]`, `usage: "lots"`) raises
    `InvalidResponseError` naming this server and the field, instead of an AttributeError deep in
    the agent (the shapes are in `upstream_shapes`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import SecretStr

from nemo_gym.client import HttpClient, HttpResult, error_excerpt, parse_retry_after
from nemo_gym.errors import HTTPStatusError, InvalidResponseError, RequestTimeoutError, ResponseTooLargeError
from nemo_gym.servers.model import UpstreamModelConfig
from nemo_gym.servers.upstream_shapes import AnswerShape

JSONDict = dict[str, Any]
AuthScheme = Literal["bearer", "api-key"]


class UpstreamClient:
    """One model server's pooled client to its upstream. Create it in `on_startup`, close in `on_shutdown`."""

    def __init__(
        self,
        server_name: str,
        config: UpstreamModelConfig,
        *,
        auth: AuthScheme = "bearer",
        max_concurrent_requests: int | None = None,
    ):
        self.server_name = server_name
        self._http = HttpClient(timeouts=config.timeouts, limits=config.limits, retry=config.retry_policy)
        self._api_key = config.upstream_api_key
        self.headers = _auth_headers(config.upstream_api_key, auth)
        self._limit = asyncio.Semaphore(max_concurrent_requests) if max_concurrent_requests else None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(self, url: str, payload: JSONDict, *, params: dict[str, str] | None = None) -> HttpResult:
        """POST with retries; the final result whatever its status (see `raise_for_status`)."""
        try:
            if self._limit is None:
                return await self._http.request("POST", url, json=payload, headers=self.headers, params=params)
            async with self._limit:
                return await self._http.request("POST", url, json=payload, headers=self.headers, params=params)
        except ResponseTooLargeError as error:
            raise ResponseTooLargeError(
                f"model server {self.server_name!r}: upstream {error} (max_upstream_response_bytes="
                f"{error.limit_bytes})",
                url=error.url,
                limit_bytes=error.limit_bytes,
            ) from None
        except RequestTimeoutError as error:
            raise RequestTimeoutError(
                f"model server {self.server_name!r}: upstream {error}", connect_timed_out=error.connect_timed_out
            ) from None

    def raise_for_status(self, result: HttpResult) -> HttpResult:
        if result.ok:
            return result
        message = self._redact(error_excerpt(result.body, limit=300))
        raise HTTPStatusError(
            f"model server {self.server_name!r}: upstream {result.url} answered HTTP {result.status}: {message}",
            status_code=result.status,
            body=self._redact(result.text[:2000]),
            retry_after=parse_retry_after(result.headers.get("Retry-After")),
        )

    def parse(self, result: HttpResult, shape: AnswerShape) -> JSONDict:
        """The body of a 2xx `result` as a dict, checked against `shape` (callers convert it)."""
        try:
            body = result.json()
        except InvalidResponseError as error:
            raise InvalidResponseError(f"model server {self.server_name!r}: {error}") from None
        self._raise_for_problem(result, shape, shape.problem_in(body))
        return body

    def check(self, result: HttpResult, shape: AnswerShape) -> HttpResult:
        """Check the raw body of a 2xx `result` against `shape`, for callers that forward the bytes."""
        self._raise_for_problem(result, shape, shape.problem_in_json(result.body))
        return result

    def _raise_for_problem(self, result: HttpResult, shape: AnswerShape, problem: str | None) -> None:
        if problem is not None:
            raise InvalidResponseError(
                f"model server {self.server_name!r}: upstream {result.url} answered a malformed {shape.what}: {problem}"
            )

    def _redact(self, text: str) -> str:
        # Some upstreams echo the key they rejected; it must not travel on into failure records.
        key = self._api_key.get_secret_value()
        return text.replace(key, "***") if key else text


def _auth_headers(api_key: SecretStr, scheme: AuthScheme) -> dict[str, str]:
    # The one place a key is revealed: the header it travels in.
    key = api_key.get_secret_value()
    if not key:
        return {}
    return {"api-key": key} if scheme == "api-key" else {"Authorization": f"Bearer {key}"}
