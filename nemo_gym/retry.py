"""One retry vocabulary for every layer: which failures deserve another attempt, and how long to wait.

Three layers retry, each with its own `RetryPolicy` value but all with the classifier and the
backoff formula of this module:

  * `nemo_gym.client.HttpClient` retries one HTTP request (internal hops: refused connections only);
  * model servers retry their upstream calls (policy from their config, `UpstreamModelConfig`);
  * the collector retries whole rollouts (`CollectionPolicy`).

The classifier (`classify_status`, `classify_error`) sorts a failure into one `FailureKind`:

  * CONNECT    the connection was refused: nothing was delivered, always safe to repeat;
  * TRANSPORT  the connection dropped or a deadline passed: the request may have been delivered;
  * STATUS     the peer answered 408, 429 or 5xx: it may succeed later;
  * PERMANENT  everything else, notably any other 4xx: the same request fails the same way, so
               repeating it only burns quota (an upstream 401 retried as whole rollouts was a bug).

A policy says which kinds it retries and how often. The wait before attempt n+1 is "equal jitter":
uniform(c/2, c) with c = min(backoff_max_s, backoff_initial_s * 2**(n-1)), so retries never fire in
lockstep and never immediately; a `Retry-After` from the peer replaces it, capped at
`max_retry_after_s` so a peer cannot park us for an hour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.errors import HTTPStatusError, ServerUnreachableError, TransportError


class FailureKind(Enum):
    CONNECT = "connect"
    TRANSPORT = "transport"
    STATUS = "status"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What the classifier made of one failure."""

    kind: FailureKind
    retry_after: float | None = None
    """Seconds the peer asked us to wait (`Retry-After`), if it said."""

    @property
    def retryable(self) -> bool:
        return self.kind is not FailureKind.PERMANENT


PERMANENT = RetryDecision(FailureKind.PERMANENT)
_CONNECT = RetryDecision(FailureKind.CONNECT)
_TRANSPORT = RetryDecision(FailureKind.TRANSPORT)


def is_retryable_status(status: int) -> bool:
    """408 (request timeout), 429 (rate limited) and every 5xx; never another 4xx."""
    return status == 408 or status == 429 or 500 <= status <= 599


def classify_status(status: int, retry_after: float | None = None) -> RetryDecision:
    if is_retryable_status(status):
        return RetryDecision(FailureKind.STATUS, retry_after)
    return PERMANENT


def classify_error(error: BaseException) -> RetryDecision:
    """The decision for an exception raised by one of our clients (or a deadline)."""
    if isinstance(error, HTTPStatusError):
        return classify_status(error.status_code, error.retry_after)
    if isinstance(error, ServerUnreachableError) and error.connect_failed:
        return _CONNECT
    if isinstance(error, (TransportError, TimeoutError)):
        return _TRANSPORT
    return PERMANENT


class RetryPolicy(BaseModel):
    """How many attempts, which failure kinds are retried, and the backoff. Never unbounded."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(4, ge=1)
    """Attempts in total, the first one included (1 = no retry)."""
    backoff_initial_s: float = Field(0.2, ge=0)
    """Ceiling of the first wait; doubles with every attempt."""
    backoff_max_s: float = Field(10.0, ge=0)
    """Largest ceiling the doubling reaches."""
    max_retry_after_s: float = Field(60.0, ge=0)
    """Longest `Retry-After` honoured; a longer one is cut to this. 60 s covers per-minute quotas."""
    retry_statuses: bool = True
    """Retry answers of 408, 429 and 5xx."""
    retry_transport_errors: bool = True
    """Retry dropped connections and timeouts (may replay a request the peer already received)."""
    retry_connect_errors: bool = True
    """Retry refused connections (safe: nothing was delivered)."""

    def allows(self, decision: RetryDecision) -> bool:
        """Whether this policy retries failures of `decision`'s kind at all."""
        kind = decision.kind
        if kind is FailureKind.CONNECT:
            return self.retry_connect_errors or self.retry_transport_errors
        if kind is FailureKind.TRANSPORT:
            return self.retry_transport_errors
        if kind is FailureKind.STATUS:
            return self.retry_statuses
        return False

    def should_retry(self, decision: RetryDecision, attempt: int) -> bool:
        """Whether to make attempt `attempt + 1` after attempt `attempt` (counting from 1) failed."""
        return attempt < self.max_attempts and self.allows(decision)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1`."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)
CONNECT_ONLY_RETRY = RetryPolicy(max_attempts=4, retry_statuses=False, retry_transport_errors=False)
"""Internal hops: a refused connection is retried, a request that may have arrived is not replayed
(whole rollouts are retried by the collector, one layer up)."""
UPSTREAM_RETRY = RetryPolicy(max_attempts=5)
