"""Hiding secrets (api keys, tokens, passwords) before a config is printed or logged."""

from __future__ import annotations

import copy
import re
from typing import Any

_SECRET_LAST_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "credentials"})
_SECRET_ANYWHERE = ("secret", "password", "passwd", "api_key", "apikey", "authorization")
REDACTED = "***"


def _is_secret_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    words = [w for w in re.split(r"[_\-.\s]+", lowered) if w]
    # Whole words only: `max_tokens` and `token_id_capture` are settings, `hf_token` is a secret.
    return bool(words) and words[-1] in _SECRET_LAST_WORDS or any(part in lowered for part in _SECRET_ANYWHERE)


def redact(container: dict | list) -> dict | list:
    """A deep copy with the values of secret-looking keys (api_key, *_key, token, ...) replaced by '***'."""
    if isinstance(container, dict):
        return {
            key: (REDACTED if value is not None else None)
            if _is_secret_key(key)
            else (redact(value) if isinstance(value, (dict, list)) else copy.deepcopy(value))
            for key, value in container.items()
        }
    if isinstance(container, list):
        return [redact(item) if isinstance(item, (dict, list)) else copy.deepcopy(item) for item in container]
    return copy.deepcopy(container)


def secret_values(container: Any) -> set[str]:
    """Every string value held under a secret-looking key, at any depth (to scrub them from text)."""
    found: set[str] = set()
    if isinstance(container, dict):
        for key, value in container.items():
            if _is_secret_key(key) and isinstance(value, str):
                found.add(value)
            elif isinstance(value, (dict, list)):
                found |= secret_values(value)
    elif isinstance(container, list):
        for item in container:
            found |= secret_values(item)
    return found
