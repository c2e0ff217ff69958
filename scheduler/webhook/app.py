"""The webhook server: GitHub and GitLab deliveries in, `enqueue_pr` calls out.

A delivery is checked in the order that costs an unauthenticated sender least: media
type, size, signature (GitHub signs the body, so the body is read first; GitLab's token
is a header, checked before reading), and only then parsed. The handler never talks to
a forge or a provider: it records the PR and queues a `plan_pr` job, which is why it
answers within milliseconds.

Statuses: 200 ping and duplicate deliveries; 202 queued, cancelled, ignored or refused
(with the reason); 400 malformed; 401 bad or missing signature; 403 forge not
configured; 409 the same delivery is being processed right now, or the PR's id is held
by another forge's PR; 413 too large; 415 not JSON; 422 anything else the handlers did
not expect (logged); 429 the repository queued its hourly share of PR heads; 503 Redis
unreachable (retry later). Nothing a client sends yields a 500.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Literal

import redis as redis_lib
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scheduler.admission import Admission
from scheduler.config import Settings, connect_redis, redact_url
from scheduler.intake import ForgeConflict, enqueue_pr, head_moved
from scheduler.ops.deployment import LIMITER_PREFIX, deployment_prefix
from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import Limiter
from scheduler.state.jobs import review_queue
from scheduler.state.keys import Keys
from scheduler.webhook.deliveries import Deliveries
from scheduler.webhook.events import Action, BadPayload, Cancel, Enqueue, parse_json
from scheduler.webhook.gate import Gate, RateLimited
from scheduler.webhook.github import github_action, signature_ok
from scheduler.webhook.gitlab import gitlab_action, token_ok
from scheduler.webhook.http import (
    FORM_TYPE,
    JSON_TYPE,
    HttpError,
    answer,
    form_payload,
    media_type,
    read_body,
)
from scheduler.webhook.metrics import RedisCollector, WebhookMetrics

__all__ = ["LIMITER_PREFIX", "WebhookService", "create_app", "redis_client"]

log = logging.getLogger(__name__)

Forge = Literal["github", "gitlab"]
Result = tuple[int, str, str, str | None]  # status, outcome, detail, PR id
Interpret = Callable[[Request], Awaitable[tuple[str, bytes, Action]]]
_MAX_DELIVERY_ID = 200
_NOT_JSON = (
    "expected Content-Type application/json; choose application/json as the content "
    "type in the webhook's settings"
)


def redis_client(url: str) -> redis_lib.Redis:
    """Short timeouts: a delivery must fail fast (503) rather than hang on a dead Redis.

    One connection for plain commands: the app calls Redis from its event loop thread
    only, and the pool's per-command checkout (a lock and a poll of the socket) costs
    a sixth of a delivery's CPU. Pipelines and transactions still take pooled ones.
    That connection opens at once, so with Redis down this falls back to a pooled
    client, which reconnects by itself (`reviewq serve` pings Redis before starting).
    The single connection does not by itself: after a Redis restart the first command
    met the closed socket and that delivery got a 503, which GitHub does not redeliver.
    One immediate retry on a fresh connection takes it; a Redis still down fails fast."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [redis_lib.ConnectionError],
    }
    try:
        return connect_redis(url, single_connection_client=True, **options)
    except redis_lib.RedisError:
        return connect_redis(url, **options)


class WebhookService:
    """What the routes share: Redis, admission, the secrets and the counters."""

    def __init__(
        self,
        settings: Settings,
        redis: redis_lib.Redis,
        env: Mapping[str, str],
        insecure_dev: bool,
    ) -> None:
        self.settings, self.redis = settings, redis
        self.limit = settings.webhook.max_body_bytes
        prefix = deployment_prefix(settings)
        queue = review_queue(settings.queue_name, redis)
        fairness = settings.review.fairness
        self.admission = Admission(redis, queue, prefix=prefix, fairness=fairness)
        self.deliveries = Deliveries(redis, prefix, settings.webhook.dedupe_ttl_s)
        hook = settings.webhook
        if insecure_dev and not hook.repositories:  # local testing: any repository
            hook = hook.model_copy(update={"repositories": ("*",)})
        self.gate = Gate(hook, redis, prefix)
        self.secrets = {
            "github": _secret(env, settings.webhook.github_secret_env),
            "gitlab": _secret(env, settings.webhook.gitlab_token_env),
        }
        self.insecure_dev = insecure_dev
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = WebhookMetrics(self.registry)
        limiters = [Limiter(redis, a, key_prefix=LIMITER_PREFIX) for a in settings.accounts]
        circuit = Circuit(redis, key_prefix=LIMITER_PREFIX)
        collector = RedisCollector(redis, queue, Keys(prefix), limiters, circuit)
        self.registry.register(collector)

    # -- routes ---------------------------------------------------------------------

    async def github(self, request: Request) -> Response:
        return await self._receive(request, "github", self._github)

    async def gitlab(self, request: Request) -> Response:
        return await self._receive(request, "gitlab", self._gitlab)

    async def healthz(self, request: Request) -> Response:
        try:
            self.redis.ping()
        except redis_lib.RedisError as exc:
            where = redact_url(self.settings.redis_url)
            return answer(503, "unavailable", f"Redis at {where} is unreachable: {exc}")
        return answer(200, "ok", "Redis answers")

    async def metrics_page(self, request: Request) -> Response:
        return Response(
            generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # -- one delivery -----------------------------------------------------------------

    async def _receive(self, request: Request, forge: Forge, interpret: Interpret) -> Response:
        started = time.perf_counter()
        pr, retry_after = None, None
        try:
            delivery, body, action = await interpret(request)
            status, outcome, detail, pr = self.carry_out(forge, delivery, action, body)
        except HttpError as exc:
            status, outcome, detail = exc.status, exc.outcome, exc.detail
            retry_after = exc.retry_after_s
        except BadPayload as exc:
            status, outcome, detail = 400, "bad_request", str(exc)
        except ForgeConflict as exc:
            status, outcome, detail = 409, "conflict", str(exc)
        except redis_lib.RedisError as exc:
            log.warning("%s delivery: Redis unavailable: %s", forge, exc)
            status, outcome = 503, "redis_unavailable"
            detail = f"Redis is unavailable ({type(exc).__name__}); deliver again later"
        except Exception as exc:  # a state the handlers did not expect: never a 500
            log.exception("%s delivery could not be handled", forge)
            status, outcome = 422, "unprocessable"
            detail = f"this delivery could not be handled ({type(exc).__name__}); see the log"
        self.metrics.observe(forge, outcome, time.perf_counter() - started)
        return answer(status, outcome, detail, retry_after_s=retry_after, pr=pr)

    def _key(self, forge: Forge) -> bytes | None:
        """The forge's secret; None when unsigned deliveries are allowed (--insecure-dev)."""
        secret = self.secrets[forge]
        if secret is None and not self.insecure_dev:
            var = (
                self.settings.webhook.github_secret_env
                if forge == "github"
                else self.settings.webhook.gitlab_token_env
            )
            raise HttpError(403, "not_configured", f"{forge} deliveries are off: {var} is not set")
        return secret

    async def _github(self, request: Request) -> tuple[str, bytes, Action]:
        kind = media_type(request)
        if kind not in (JSON_TYPE, FORM_TYPE):
            raise HttpError(415, "unsupported_media_type", _NOT_JSON)
        secret = self._key("github")
        body = await read_body(request, self.limit)
        headers = request.headers
        if secret is not None and not signature_ok(
            secret, body, headers.get("x-hub-signature-256")
        ):
            raise HttpError(401, "bad_signature", _unsigned("X-Hub-Signature-256", headers))
        event = headers.get("x-github-event")
        if not event:
            raise HttpError(400, "bad_request", "the X-GitHub-Event header is required")
        delivery = _delivery_id(headers.get("x-github-delivery"), "X-GitHub-Delivery")
        payload = form_payload(body) if kind == FORM_TYPE else body
        label = self.settings.webhook.now_label
        return delivery, body, github_action(event, parse_json(payload), delivery, label)

    async def _gitlab(self, request: Request) -> tuple[str, bytes, Action]:
        if media_type(request) != JSON_TYPE:
            raise HttpError(415, "unsupported_media_type", _NOT_JSON)
        token, headers = self._key("gitlab"), request.headers
        if token is not None and not token_ok(token, headers.get("x-gitlab-token")):
            raise HttpError(401, "bad_signature", _unsigned("X-Gitlab-Token", headers))
        body = await read_body(request, self.limit)
        key = headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid")
        delivery = _delivery_id(key, "Idempotency-Key or X-Gitlab-Event-UUID")
        return delivery, body, gitlab_action(parse_json(body), delivery)

    def carry_out(self, forge: Forge, delivery: str, action: Action, body: bytes) -> Result:
        """Act once per delivery (its id and its body, see `deliveries`): the mark is
        confirmed only after the work succeeded. A PR the gate refuses is answered
        before anything is written."""
        if not isinstance(action, Enqueue | Cancel):
            return (
                (200, "pong", "pong", None)
                if action.ping
                else (202, "ignored", action.reason, None)
            )
        if isinstance(action, Enqueue) and (why := self.gate.refusal(action)) is not None:
            log.info("%s delivery %s refused: %s", forge, delivery, why)
            return 202, "refused", why, action.ref.id
        keys = self.deliveries.keys(forge, delivery, body)
        claim, now_ms = self.deliveries.claim_at(*keys)
        if claim == "done":
            return 200, "duplicate", f"delivery {delivery} was already processed", None
        if claim == "pending":
            return 409, "in_progress", f"delivery {delivery} is being processed", None
        try:
            result = self._act(action, keys, now_ms)
        except BaseException:
            self.deliveries.release(*keys)
            raise
        if result[1] != "enqueued":  # an enqueue marked it itself
            self.deliveries.confirm(*keys)
        return result

    def _act(self, action: Enqueue | Cancel, keys: tuple[str, ...], now_ms: int) -> Result:
        if isinstance(action, Cancel):
            count = self.admission.cancel(action.pr, action.reason)
            return (
                202,
                "cancelled",
                f"{action.reason}: {count} unstarted message(s) cancelled",
                action.pr,
            )
        ref = action.ref
        if action.source.get("now"):  # the PR's now label: no wait for off-peak prices
            self.admission.expedite(ref.id)
        if action.unchanged is not None and not head_moved(
            self.admission.read_meta(ref.id), ref.head_sha
        ):  # an edit that changed no code spends no place in the repository's rate
            return 202, "ignored", action.unchanged, ref.id
        place = self.gate.take(action.repo, f"{ref.id}@{ref.head_sha}")
        if isinstance(place, RateLimited):
            raise HttpError(
                429,
                "rate_limited",
                f"{action.repo} queued {place.limit} PR heads in the last hour "
                "([webhook] repo_rate); deliver again later or `reviewq enqueue` it",
                retry_after_s=-(-place.retry_after_ms // 1000),
            )
        done = partial(self.deliveries.done_in, keys=keys)
        queued = False
        try:
            queued = enqueue_pr(
                self.admission,
                ref,
                action.source,
                also=done,
                now_ms=now_ms,
                if_moved=action.unchanged is not None,
            )
        finally:
            if not queued:  # already queued or reviewed, or it failed: not a new head
                self.gate.give_back(place)
        if queued:
            return 202, "enqueued", f"queued for review at {ref.head_sha[:12]}", ref.id
        if action.unchanged is not None:
            return 202, "ignored", action.unchanged, ref.id
        return (
            202,
            "already_queued",
            f"{ref.head_sha[:12]} is already queued or reviewed",
            ref.id,
        )


def _secret(env: Mapping[str, str], var: str) -> bytes | None:
    value = env.get(var, "").strip()
    return value.encode() if value else None


def _unsigned(header: str, headers: Mapping[str, str]) -> str:
    if header.lower() not in headers:
        return f"the {header} header is missing"
    return f"the {header} header does not match this server's secret"


def _delivery_id(value: str | None, header: str) -> str:
    """Required: a delivery is acted on once by its id (and its body's digest)."""
    if not value:
        raise HttpError(400, "bad_request", f"the {header} header is required")
    if len(value) > _MAX_DELIVERY_ID:
        raise HttpError(
            400, "bad_request", f"{header} is longer than {_MAX_DELIVERY_ID} characters"
        )
    return value


def create_app(
    settings: Settings,
    redis: redis_lib.Redis | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    insecure_dev: bool = False,
) -> Starlette:
    """The ASGI app `reviewq serve` runs; `app.state.webhook` is its `WebhookService`.

    Secrets are read from `env` once, here. A forge without one answers 403, unless
    `insecure_dev`, which accepts its deliveries unsigned (local testing only).
    """
    service = WebhookService(settings, redis or redis_client(settings.redis_url), env, insecure_dev)
    for forge, secret in service.secrets.items():
        if secret is None and insecure_dev:
            log.warning("INSECURE: %s deliveries are accepted without a signature", forge)
    routes = [
        Route("/webhooks/github", service.github, methods=["POST"]),
        Route("/webhooks/gitlab", service.gitlab, methods=["POST"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/metrics", service.metrics_page, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.webhook = service
    return app
