"""Keep API keys out of the failure records a collection writes.

A failure record carries the error text, and error text can carry an upstream's error body: a 401
from a provider often echoes the key it rejected. Before a record is written, `SecretRedactor`
replaces every known secret value (the CLI passes the values of the config's secret-looking keys,
such as `policy_api_key`, and of secret-looking environment variables) and anything shaped like a
provider key or a bearer token, so a key the collector was never told about is caught too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"
MIN_SECRET_LENGTH = 8
"""Shorter configured values (`x`, `none`, `EMPTY`) are placeholders; replacing them would garble messages."""

# Provider-key shapes (OpenAI/Anthropic `sk-...`, `sk-proj-...`) and bearer / basic credentials.
_KEY_SHAPES = re.compile(
    r"\bsk-[A-Za-z0-9_\-]{8,}"
    r"|(?i:\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]{8,}"
    r"|(?i:\b(?:api[_-]?key|access[_-]?token|token|secret)=)[^&\s\"'\\]{8,}"
)


class SecretRedactor:
    """`redactor(text)` -> text with secrets replaced by `***`."""

    def __init__(self, secret_values: Iterable[str] = ()):
        values = sorted(
            {v for v in secret_values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )  # longest first, so a key containing another is fully hidden
        self._values = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(REDACTED, text)
        return _KEY_SHAPES.sub(_keep_prefix, text)


def _keep_prefix(match: re.Match[str]) -> str:
    """`Bearer ***`, `api_key=***`, `sk-***`: the reader still sees what kind of secret was there."""
    found = match.group(0)
    for separator in ("=", " ", "\t"):
        if separator in found:
            return found[: found.index(separator) + 1] + REDACTED
    return "sk-" + REDACTED
