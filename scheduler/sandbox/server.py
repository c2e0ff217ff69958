"""Run any ASGI app on a real local socket in a background thread.

Tests talk to the simulators over real HTTP (uvicorn on 127.0.0.1, a kernel-picked
port), so the client code under test runs exactly as it would against a provider.
The same helper serves the fake GitHub, and the `reviewq sandbox` commands.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

__all__ = ["ServerHandle", "is_loopback", "serve_in_thread"]

_POLL_S = 0.01


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerHandle:
    """A running server: `url` to call it, `stop()` (or `with`) to end it."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server ends; True if it has."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit; requests still running get its graceful-shutdown grace."""
        if self._stopped:
            return
        self._stopped = True
        self.server.should_exit = True
        if not self.wait(timeout):
            self.server.force_exit = True
            self.wait(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_in_thread(
    app: ASGIApp,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    startup_timeout: float = 10.0,
    log_level: str = "warning",
    graceful_shutdown_s: int = 1,
) -> ServerHandle:
    """Start `app`; port 0 lets the kernel pick a free port (read it from the handle).

    Binding to port 0 inside uvicorn, rather than probing for a free port first,
    leaves no window in which another process can take the port.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=graceful_shutdown_s,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{host}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(startup_timeout)
            raise RuntimeError(f"server on {host}:{port} did not start (see uvicorn's log)")
        time.sleep(_POLL_S)
    bound = server.servers[0].sockets[0].getsockname()
    return ServerHandle(server, thread, host, int(bound[1]))
