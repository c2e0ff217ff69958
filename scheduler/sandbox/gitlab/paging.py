"""GitLab's offset paging, as its REST docs show it (doc/api/rest/_index.md, "Pagination").

A list answers one page with six `x-*` headers (`x-next-page` and `x-prev-page` empty
at the ends) and a `Link` header whose links come in GitLab's order, `prev`, `next`,
`first`, `last`, each the request's own URL with `page` and `per_page` set. Past 10,000
items GitLab leaves out `x-total`, `x-total-pages` and the `last` link, so a client
must not need them; the fake does the same past `count_limit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar
from urllib.parse import urlencode

from starlette.requests import Request

__all__ = ["COUNT_LIMIT", "page", "raw_path"]

T = TypeVar("T")
# GitLab stops counting a listing past this many items (doc/api/rest/_index.md,
# "Pagination response headers"; read 2026-12-07).
COUNT_LIMIT = 10_000


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return value if value >= 1 else default


def raw_path(request: Request) -> str:
    """The path as the client sent it: a project named by its path keeps its `%2F`."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    return raw.split(b"?", 1)[0].decode("latin-1")


def _url(request: Request, number: int, per_page: int) -> str:
    query = {**request.query_params, "page": str(number), "per_page": str(per_page)}
    origin = f"{request.url.scheme}://{request.url.netloc}"
    return f"{origin}{raw_path(request)}?{urlencode(query)}"


def page(
    request: Request,
    items: Sequence[T],
    *,
    default_per_page: int,
    max_per_page: int,
    count_limit: int = COUNT_LIMIT,
) -> tuple[list[T], dict[str, str]]:
    """One page of `items` and the headers GitLab sends with it."""
    per_page = min(_int_param(request, "per_page", default_per_page), max_per_page)
    number = _int_param(request, "page", 1)
    last = max(1, math.ceil(len(items) / per_page))
    counted = len(items) <= count_limit
    headers = {
        "x-page": str(number),
        "x-per-page": str(per_page),
        "x-next-page": str(number + 1) if number < last else "",
        "x-prev-page": str(number - 1) if 1 < number <= last else "",
    }
    if counted:
        headers.update({"x-total": str(len(items)), "x-total-pages": str(last)})

    def link(to: int, rel: str) -> str:
        return f'<{_url(request, to, per_page)}>; rel="{rel}"'

    links = []
    if headers["x-prev-page"]:
        links.append(link(number - 1, "prev"))
    if headers["x-next-page"]:
        links.append(link(number + 1, "next"))
    links.append(link(1, "first"))
    if counted:
        links.append(link(last, "last"))
    headers["link"] = ", ".join(links)
    return list(items[(number - 1) * per_page : number * per_page]), headers
