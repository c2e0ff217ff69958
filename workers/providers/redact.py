"""A provider's own words, made safe to log, alert on and post in a PR comment.

Providers echo what they were sent: an error can quote the Authorization header, or a
key pasted into the wrong variable. Whatever a provider says is cut to a snippet, and
anything that looks like a credential is replaced first, since cutting first could
leave a key's prefix behind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["SECRET_HEADERS", "echoed_secrets", "snippet"]

# Request and response headers that carry credentials (lower case).
SECRET_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key")
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?!\[redacted\])[^\s,;\"'\]]+")
_PREFIXED_KEY = re.compile(r"\b(?:sk|pk|rk|syn)[-_][A-Za-z0-9_.-]{6,}")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9_.+=-]{32,}")
_SNIPPET_CHARS = 160


def echoed_secrets(headers: Mapping[str, str]) -> tuple[str, ...]:
    """Credential values a response echoes back (`headers` in lower case), to be
    scrubbed literally from text."""
    values = (headers.get(name, "") for name in SECRET_HEADERS)
    return tuple(token for value in values for token in value.split() if len(token) >= 8)


def snippet(text: str, secrets: tuple[str, ...]) -> str:
    """Redact first, then shorten: cutting first could leave a key's prefix behind."""
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    text = _BEARER.sub(lambda m: f"{m[1]} [redacted]", text)
    text = _PREFIXED_KEY.sub("[redacted]", text)
    text = _LONG_TOKEN.sub(_redact_long, text)
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"


def _redact_long(match: re.Match[str]) -> str:
    """Long letter-and-digit runs look like keys (Z.AI's are hex.alnum, ~49 chars)."""
    token = match[0]
    has_both = any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
    return "[redacted]" if has_both else token
