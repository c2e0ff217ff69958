"""What a worker process needs, built once per process from a picklable `RuntimeSpec`.

RQ job arguments carry only ids; everything else (settings, the Redis client, the
route of accounts, the sink) comes from here. A spec crosses process boundaries
(`reviewq worker --processes`, `simulate`), the clients built from it never do, so
no socket is ever shared between a parent and its forked children.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import httpx

from scheduler.admission import Admission, Fairness
from scheduler.config import ConfigError, Settings, connect_redis
from scheduler.config.planning import PlanningConfig
from scheduler.config.review import DEFAULT_DESCRIPTION_CHARS
from scheduler.ops.deployment import deployment_prefix
from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import LIMITER_PREFIX
from scheduler.quota.timeofday import IDENTITY, Calendar, RedisCalendar
from scheduler.state.jobs import review_queue, review_worker
from scheduler.state.records import Retention
from workers.forge.sinks import ForgeSink, GitHubSink, LogSink, Sink
from workers.providers.attempt import DEFAULT_RETRY, RetryPolicy
from workers.providers.client import DEFAULT_TIMEOUT
from workers.providers.failover import DEFAULT_LEASE_MS, DEFAULT_MAX_WAIT_MS, Route, build_route
from workers.review.model import DEFAULT_MAX_COMMENT_CHARS, DEFAULT_MAX_COMMENTS

if TYPE_CHECKING:
    from workers.forge.gitlab import GitLabClient

__all__ = ["Runtime", "RuntimeSpec", "configure", "run_worker", "runtime", "runtime_spec"]

SinkName = Literal["log", "forge", "github"]


@dataclass(frozen=True)
class RuntimeSpec:
    """Everything a worker process builds its clients from. `env` overrides the process
    environment for API keys (tests and `simulate`); it is never logged."""

    settings: Settings
    redis_url: str = field(repr=False)  # may carry the Redis password
    prefix: str
    queue_name: str
    model: str
    limiter_prefix: str = LIMITER_PREFIX
    fairness: Fairness = field(default_factory=Fairness)
    planning: PlanningConfig = field(default_factory=PlanningConfig)
    sink: SinkName = "log"
    github_url: str = "https://api.github.com"
    github_token_env: str = "GITHUB_TOKEN"
    # `[review]`: the account reviewq posts as (None: ask GitHub), and what one review
    # carries of a model's output at most.
    github_login: str | None = None
    # GitLab, as `[review]` names it: the instance, the token's variable and how it is
    # sent, and the account reviewq posts as (None: ask GitLab).
    gitlab_url: str = "https://gitlab.com"
    gitlab_token_env: str = "GITLAB_TOKEN"
    gitlab_auth: Literal["private-token", "bearer"] = "private-token"
    gitlab_username: str | None = None
    max_comments: int = DEFAULT_MAX_COMMENTS
    max_comment_chars: int = DEFAULT_MAX_COMMENT_CHARS
    max_tokens: int = 2048
    # `[review] temperature` and `response_format` (docs/prompt.md).
    temperature: float | None = None
    response_format: Literal["none", "json_object"] = "none"
    description_chars: int = DEFAULT_DESCRIPTION_CHARS
    lease_ms: int = DEFAULT_LEASE_MS
    max_wait_ms: int = DEFAULT_MAX_WAIT_MS
    claim_ms: int = 60_000
    park_recheck_ms: int = 5 * 60_000
    fallback_ms: int = 5_000
    retry: RetryPolicy = DEFAULT_RETRY
    trace: bool = False
    job_timeout_s: int = 900
    retention: Retention = field(default_factory=Retention)
    # RQ cleans its registries this often (its default: 10 min); `simulate` scales it.
    maintenance_interval_s: int = 600
    env: Mapping[str, str] | None = field(default=None, repr=False)
    # The provider call's read timeout (None: the client's default, 300 s); and, per
    # account, which plan window each provider quota reading feeds (None: matched by
    # duration, which a time-compressed `simulate` plan no longer has).
    provider_timeout_s: float | None = None
    quota_window_maps: Mapping[str, Mapping[str, str]] | None = None
    # Reasoning as `[review] thinking` resolves it (None: no `thinking` field sent).
    thinking: Mapping[str, str | int] | None = None
    # Every account's quota poll interval (None: per account; `simulate` compresses it),
    # and the Redis key of a simulation's calendar (None: the wall clock).
    quota_poll_ms: int | None = None
    calendar_key: str | None = None

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self.env is None else {**os.environ, **self.env}


def runtime_spec(settings: Settings) -> RuntimeSpec:
    """What every worker process of a deployment builds its clients from, from its
    loaded settings (`reviewq worker`); the rest of the spec keeps its defaults."""
    review = settings.review
    return RuntimeSpec(
        settings=settings,
        redis_url=settings.redis_url,
        prefix=deployment_prefix(settings),
        queue_name=settings.queue_name,
        model=review.model_for(settings.accounts),
        fairness=review.fairness,
        planning=settings.planning,
        sink=review.sink,
        github_url=review.github_url,
        github_token_env=review.github_token_env,
        github_login=review.github_login,
        gitlab_url=review.gitlab_url,
        gitlab_token_env=review.gitlab_token_env,
        gitlab_auth=review.gitlab_auth,
        gitlab_username=review.gitlab_username,
        max_comments=review.max_comments,
        max_comment_chars=review.max_comment_chars,
        max_tokens=review.max_tokens,
        temperature=review.temperature,
        response_format=review.response_format,
        description_chars=review.description_chars,
        thinking=review.thinking_for(settings.accounts),
    )


class Runtime:
    """The clients of one process. Built lazily: importing `workers.jobs` is free."""

    def __init__(self, spec: RuntimeSpec) -> None:
        self.spec = spec
        self.redis = connect_redis(spec.redis_url)
        self.queue = review_queue(spec.queue_name, self.redis)
        key = spec.calendar_key
        self._calendar = None if key is None else RedisCalendar(self.redis, key)
        self.admission = Admission(
            self.redis,
            self.queue,
            prefix=spec.prefix,
            fairness=spec.fairness,
            job_timeout_s=spec.job_timeout_s,
            fallback_ms=spec.fallback_ms,
            retention=spec.retention,
        )
        self.route: Route = build_route(
            spec.settings,
            self.redis,
            env=spec.environ,
            max_wait_ms=spec.max_wait_ms,
            lease_ms=spec.lease_ms,
            circuit=Circuit(self.redis, key_prefix=spec.limiter_prefix),
            key_prefix=spec.limiter_prefix,
            window_maps=spec.quota_window_maps,
            timeout=_timeout(spec),
            poll_interval_ms=spec.quota_poll_ms,
            calendar=self.calendar,
        )
        self.sink: Sink = self._sink()

    def calendar(self) -> Calendar:
        """What time factors are read on: the wall clock, or a simulation's calendar."""
        return IDENTITY if self._calendar is None else self._calendar.current()

    def _sink(self) -> Sink:
        log_sink = LogSink(self.redis, prefix=self.spec.prefix, ttl_s=self.spec.retention.review_s)
        if self.spec.sink == "log":
            return log_sink
        return ForgeSink(log_sink, {"github": self._github_sink, "gitlab": self._gitlab_sink})

    def _github_sink(self) -> Sink:
        from workers.forge.github import GitHubClient

        client = GitHubClient(self.github_token(), base_url=self.spec.github_url)
        return GitHubSink(client, login=self.spec.github_login)

    def _gitlab_sink(self) -> Sink:
        from workers.forge.gitlab_sink import GitLabSink

        return GitLabSink(self.gitlab_client(), username=self.spec.gitlab_username)

    def github_token(self) -> str:
        return self._token(self.spec.github_token_env, "GitHub")

    def gitlab_client(self) -> GitLabClient:
        """A client of the configured GitLab; its token is read now, never stored."""
        from workers.forge.gitlab import GitLabClient

        token = self._token(self.spec.gitlab_token_env, "GitLab")
        return GitLabClient(token, base_url=self.spec.gitlab_url, auth=self.spec.gitlab_auth)

    def _token(self, var: str, forge: str) -> str:
        token = self.spec.environ.get(var, "").strip()
        if not token:
            raise ConfigError(
                f"environment variable {var} is not set; the {forge} source and sink need a token"
            )
        return token

    def close(self) -> None:
        for entry in self.route.entries:
            entry.client.close()
        self.redis.close()


def _timeout(spec: RuntimeSpec) -> httpx.Timeout:
    base, read = DEFAULT_TIMEOUT, spec.provider_timeout_s
    if read is None:
        return base
    return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)


_lock = threading.Lock()
_spec: RuntimeSpec | None = None
_runtime: Runtime | None = None
_pid: int | None = None


def configure(spec: RuntimeSpec) -> None:
    """Set the spec this process (and processes forked from it) build from."""
    global _spec, _runtime, _pid
    with _lock:
        _spec, _runtime, _pid = spec, None, None


def runtime() -> Runtime:
    """This process's runtime; a forked child builds its own on first use."""
    global _runtime, _pid
    with _lock:
        if _runtime is None or _pid != os.getpid():
            if _spec is None:
                raise RuntimeError("no runtime configured: start workers with `reviewq worker`")
            _runtime, _pid = Runtime(_spec), os.getpid()
        return _runtime


def run_worker(spec: RuntimeSpec, *, burst: bool = False, logging_level: str = "WARNING") -> None:
    """The body of one worker process (`reviewq worker`, `simulate`, the tests): an RQ
    `SimpleWorker` on this process's runtime; SIGTERM makes it finish its job and stop."""
    configure(spec)
    rt = runtime()
    worker = review_worker(
        [rt.queue], connection=rt.redis, maintenance_interval=spec.maintenance_interval_s
    )
    worker.work(burst=burst, logging_level=logging_level)
