"""A lean asyncio HTTP/1.1 keep-alive client: the load generator of `reviewq bench webhook`.

The bench runs its load generator on the same two cores as the server it measures, but
GitHub's senders are not on our CPU: every cycle the client spends is one the server
does not get, so the figure measures the client as much as the server. httpx costs
more CPU per request than the server's whole delivery path. This client does only
what a bench needs: requests are serialized to bytes before the clock starts, each
connection sends one request at a time and reads one response.

It parses what it reads properly (status line, headers, a `Content-Length` body) and
raises `HttpProtocolError` on anything it does not understand (chunked or
close-delimited bodies, malformed lines, interim responses), so an odd answer is
counted as an error by the bench, never taken for a success.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Connection", "HttpProtocolError", "Response", "build_request", "parse_head"]

_HEAD_LIMIT = 64 * 1024  # a response head longer than this is not one we expect
_NO_BODY = frozenset({204, 304})


class HttpProtocolError(Exception):
    """The server's bytes are not a response this client can read with certainty."""


@dataclass(frozen=True, slots=True)
class Response:
    """One response: headers by lower-case name (repeats joined with ", ")."""

    status: int
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def build_request(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """The whole request as bytes, built once so sending it costs one socket write.

    `Content-Length` is always set from `body`; `Host` from `url`."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs with a host are supported: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fields = {"Host": parts.netloc, **(headers or {}), "Content-Length": str(len(body))}
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in fields.items():
        if any(c in name + value for c in "\r\n") or ":" in name or not name:
            raise ValueError(f"header {name!r} cannot be sent as given")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, dict[str, str], int, bool]:
    """Status, headers, body length and keep-alive from a head ending in CRLF CRLF."""
    lines = head.decode("latin-1").split("\r\n")
    if len(lines) < 3 or lines[-2:] != ["", ""]:
        raise HttpProtocolError(f"response head is not CRLF-terminated: {head[:80]!r}")
    version, status = _status_line(lines[0])
    headers: dict[str, str] = {}
    for line in lines[1:-2]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise HttpProtocolError(f"malformed header line: {line[:80]!r}")
        key, value = name.lower(), value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    return status, headers, _body_length(status, headers), keep


def _status_line(line: str) -> tuple[str, int]:
    version, _, rest = line.partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or rest[3:4] not in ("", " "):
        raise HttpProtocolError(f"malformed status line: {line[:80]!r}")
    status = int(code)
    if status < 200:  # no Expect or Upgrade is ever sent, so none is due
        raise HttpProtocolError(f"unexpected interim response {status}")
    return version, status


def _body_length(status: int, headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise HttpProtocolError(
            f"Transfer-Encoding {headers['transfer-encoding']!r} is not supported"
        )
    if status in _NO_BODY:
        return 0
    raw = headers.get("content-length")
    if raw is None:
        raise HttpProtocolError(f"{status} response without Content-Length")
    values = {v.strip() for v in raw.split(",")}
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise HttpProtocolError(f"bad Content-Length {raw!r}")
    return int(value)


class Connection:
    """One keep-alive connection to `host:port`, one request at a time.

    After an error, or a response that closes the connection, the next request opens
    a fresh one (`opened` counts them), as a forge's sender would."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.opened = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    def for_url(cls, url: str) -> Connection:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// URLs with a host are supported: {url!r}")
        return cls(parts.hostname, parts.port or 80)

    async def request(self, raw: bytes) -> Response:
        """Send a request built by `build_request` and read its whole response."""
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=_HEAD_LIMIT
            )
            self.opened += 1
        reader, writer = self._reader, self._writer
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status, headers, length, keep = parse_head(head)
            body = await reader.readexactly(length) if length else b""
        except asyncio.LimitOverrunError as exc:
            await self.close()
            raise HttpProtocolError("response head exceeds 64 KiB") from exc
        except BaseException:
            await self.close()
            raise
        if not keep:
            await self.close()
        return Response(status, headers, body, keep)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # the peer went first: nothing to close
                await writer.wait_closed()
