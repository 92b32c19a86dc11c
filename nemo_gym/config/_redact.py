"""Hiding secrets (api keys, tokens, passwords, credentials inside URLs) before a config is printed or logged."""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_url(text: str) -> str:
    """`text` with the credentials of every URL in it masked: `http://user:KEY@host` -> `http://user:***@host`.

    A user part without a password is masked whole (`https://TOKEN@host`: a token is often passed
    as the user name), and so are secret-looking query parameters (`?api_key=...`).
    """
    return _URL.sub(lambda match: _redact_one_url(match.group(0)), text) if "://" in text else text


def _redact_one_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        username, password = parts.username, parts.password
    except ValueError:
        return text
    netloc = parts.netloc
    if username is not None or password is not None:
        host = netloc.rpartition("@")[2]
        netloc = f"{username}:{REDACTED}@{host}" if password is not None else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret_key(name) for name, _ in pairs):
            query = urlencode([(name, REDACTED if _is_secret_key(name) else value) for name, value in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return text
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact(container: Any) -> Any:
    """A deep copy with the values of secret-looking keys (api_key, *_key, token, ...) replaced by '***'
    and the credentials inside URL strings masked."""
    if isinstance(container, dict):
        return {
            key: (REDACTED if value is not None else None) if _is_secret_key(key) else redact(value)
            for key, value in container.items()
        }
    if isinstance(container, list):
        return [redact(item) for item in container]
    if isinstance(container, str):
        return redact_url(container)
    return copy.deepcopy(container)


def secret_values(container: Any) -> set[str]:
    """Every string value held under a secret-looking key, at any depth (to scrub them from text)."""
    found: set[str] = set()
    if isinstance(container, dict):
        for key, value in container.items():
            if _is_secret_key(key) and isinstance(value, str):
                found.add(value)
            else:
                found |= secret_values(value)
    elif isinstance(container, list):
        for item in container:
            found |= secret_values(item)
    elif isinstance(container, str) and "://" in container:
        found |= _url_credentials(container)
    return found


def _url_credentials(text: str) -> set[str]:
    """The passwords inside the URLs of `text`. A user part alone is not collected: it is as often a
    plain name (`ssh://git@host`) as a token, and scrubbing a name would garble every message."""
    found = set()
    for match in _URL.finditer(text):
        try:
            parts = urlsplit(match.group(0))
            password = parts.password
        except ValueError:
            continue
        if password:
            found.add(password)
    return found
