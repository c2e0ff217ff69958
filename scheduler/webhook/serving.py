"""Running the webhook app under uvicorn: one server in this process, or N forked ones.

SIGTERM and Ctrl-C stop a server gracefully: uvicorn stops accepting, lets requests
in flight finish, then exits.

With N servers the parent binds the port once and forks N uvicorn processes, each
listening on a socket of its own on that port (SO_REUSEPORT, so the kernel spreads
connections over them; one shared socket where the platform has no SO_REUSEPORT),
each with its own Redis connection, made after the fork. It passes SIGTERM and
Ctrl-C on to them and exits when they all have.

`reviewq serve` (`scheduler.cli.serve`) checks the config and says what it serves;
this module only runs the servers, and reports a requested stop through `on_stop`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import uvicorn

from scheduler.config import Settings
from scheduler.webhook.app import create_app, redis_client

__all__ = ["ListenError", "Listener", "OnStop", "fork_servers", "serve_in_process"]

_GRACE_S = 10  # for requests in flight at shutdown; each takes milliseconds

# Called with the signal that stopped a server, once uvicorn has shut it down.
OnStop = Callable[[signal.Signals], None]


@dataclass(frozen=True, slots=True)
class Listener:
    """Where the servers listen, and whether they log every request."""

    host: str
    port: int
    access_log: bool = False


class ListenError(Exception):
    """The port cannot be bound (in use, or not ours to bind)."""


def serve_in_process(app: object, listener: Listener, *, on_stop: OnStop) -> int:
    """One server in this process until it is stopped; the exit code."""
    server = uvicorn.Server(_config(app, listener))
    _freeze()
    _run(server, on_stop)
    return 0 if server.started else 1


def _config(app: object, listener: Listener) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=listener.host,
        port=listener.port,
        lifespan="off",
        log_level="info",
        access_log=listener.access_log,
        timeout_graceful_shutdown=_GRACE_S,
    )


def _freeze() -> None:
    """Everything loaded so far lives as long as the process: out of the collector's
    sight, a full collection no longer walks it (~25 ms, a pause every delivery in
    flight would wait for)."""
    gc.collect()
    gc.freeze()


# Linux and the BSDs: each server listens on a socket of its own and the kernel spreads
# new connections over them. On one shared socket the process that wakes first accepts
# every connection waiting, so a client holding a few keep-alive connections (a proxy,
# the load generator) lands them all on one process while the others idle: `bench
# webhook --workers 2` swung between 480 and 1,230 deliveries/s on that alone.
_REUSEPORT = hasattr(socket, "SO_REUSEPORT")


def _bind(listener: Listener) -> socket.socket:
    """uvicorn's bound socket, plus SO_REUSEPORT where there is one. The parent's
    socket is bound but never listens, so it reserves the port and gets no
    connections: only listening sockets share them."""
    if not _REUSEPORT:
        return _config(None, listener).bind_socket()
    host, port = listener.host, listener.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def fork_servers(
    settings: Settings, listener: Listener, *, insecure: bool, count: int, on_stop: OnStop
) -> int:
    """Bind once, fork `count` servers on the port, relay stop signals, reap them;
    the exit code. Raises `ListenError` if the port cannot be bound."""
    sock = _bind(listener)
    # --port 0 picks one, which every child shares.
    listener = Listener(listener.host, sock.getsockname()[1], listener.access_log)
    pids = [_fork_server(settings, listener, sock, insecure, on_stop) for _ in range(count)]

    def _relay(signum: int, frame: FrameType | None) -> None:
        for child in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _relay)
    codes = [os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) for child in pids]
    sock.close()
    return 0 if all(code == 0 for code in codes) else 1


def _fork_server(
    settings: Settings, listener: Listener, sock: socket.socket, insecure: bool, on_stop: OnStop
) -> int:
    """Fork one server; the parent gets its pid, the child never returns."""
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1  # the child: its own Redis connection and app, after the fork
    try:
        own = _bind(listener) if _REUSEPORT else sock
        app = create_app(settings, redis_client(settings.redis_url), insecure_dev=insecure)
        server = uvicorn.Server(_config(app, listener))
        _freeze()
        _run(server, on_stop, sockets=[own])
        code = 0 if server.started else 1
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _run(
    server: uvicorn.Server, on_stop: OnStop, sockets: list[socket.socket] | None = None
) -> None:
    """uvicorn shuts down gracefully on SIGTERM or Ctrl-C, then raises the signal again
    against the handlers it found, to die by it. Ours note it instead (`on_stop`), so a
    requested stop ends with exit code 0 rather than a kill status."""

    def _noted(signum: int, frame: FrameType | None) -> None:
        on_stop(signal.Signals(signum))

    previous = {sig: signal.signal(sig, _noted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=sockets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
