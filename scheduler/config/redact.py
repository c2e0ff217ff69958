"""Secrets shown safely: enough of a key to tell two apart, and Redis URLs with the
password masked wherever redis-py would read one."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

__all__ = ["redact", "redact_url"]


def redact(secret: str | None) -> str:
    """Enough to tell two keys apart, never enough to use one; short keys show nothing."""
    if not secret:
        return "<unset>"
    if len(secret) < 12:
        return "****"
    return "****" + secret[-4:]


# Query parameters that may carry a secret: redis-py authenticates with `password`
# from the query as well as from the userinfo, and passes the others on (`ssl_password`).
_SECRET_PARAM = re.compile(r"pass|secret|token", re.IGNORECASE)


def redact_url(url: str) -> str:
    """A Redis URL fit to print: the password is masked wherever redis-py would read
    one, in the userinfo (`redis://user:pw@host`) or the query (`?password=pw`), and the
    rest is shown for debugging. A URL with an `@` outside its userinfo shows only its
    scheme: an unencoded `?` or `#` in a password would otherwise leak the rest of it."""
    base, mark, query = url.partition("?")
    try:
        parts = urlsplit(base)
        password = parts.password
    except ValueError:
        return "****"
    if "@" in url and "@" not in parts.netloc:
        return f"{parts.scheme}://****" if parts.scheme else "****"
    shown = base
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        shown = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:****@{host}"))
    return f"{shown}{mark}{_redact_query(query)}" if mark else shown


def _redact_query(query: str) -> str:
    """Each secret parameter as `name=****`. A segment without `=` right after one is
    taken as the rest of its value (an unencoded `&` in it) and goes too."""
    out: list[str] = []
    hiding = False
    for segment in query.split("&"):
        name, eq, _ = segment.partition("=")
        if eq or not hiding:
            hiding = bool(eq) and _SECRET_PARAM.search(unquote_plus(name)) is not None
            out.append(f"{name}=****" if hiding else segment)
    return "&".join(out)
