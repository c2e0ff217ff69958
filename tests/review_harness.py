"""A model whose answers a test writes, and one deployment run in the test process.

`ScriptedModel` is an OpenAI-compatible endpoint that answers each chat request with
the next answer its test queued (text, text cut off at the length limit, or a
function of the request), and records every request. It shares no code with reviewq:
it is the referee of what reviewq sent and the source of what reviewq must read.
`Deployment` runs real parts (the tests' Redis, the Lua limiter, admission, RQ jobs)
with one burst worker in this process, so a review's whole path runs in a second or two.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis as redis_py
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from scheduler.admission import Admission, Fairness
from scheduler.config import Settings
from scheduler.config.planning import PlanningConfig
from scheduler.intake import enqueue_pr
from scheduler.quota.plans import Account, Plan, Policy, Window
from scheduler.sandbox import serve_in_thread
from scheduler.state.jobs import review_queue
from scheduler.state.refs import PullRequestRef
from workers.providers.attempt import RetryPolicy
from workers.runtime import RuntimeSpec, run_worker, runtime


@dataclass(frozen=True)
class Cut:
    """An answer the model stopped at its length limit: sent with
    `finish_reason: length`, as providers mark text cut off by `max_tokens`."""

    text: str


Answer = str | Cut | Callable[[dict[str, Any]], str]
KEY_ENV = "REVIEWQ_HARNESS_KEY"
KEY = "sk-harness-not-a-real-key"


@dataclass
class ScriptedModel:
    """Answers in order; the last one repeats when the queue runs out."""

    answers: list[Answer]
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def complete(request: Request) -> JSONResponse:
            body = await request.json()
            with self.lock:
                self.requests.append(body)
                answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
            cut = isinstance(answer, Cut)
            content = answer.text if isinstance(answer, Cut) else answer
            content = content(body) if callable(content) else content
            return JSONResponse(
                {
                    "id": f"chatcmpl-{len(self.requests)}",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "length" if cut else "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
                }
            )

        return Starlette(routes=[Route("/v1/chat/completions", complete, methods=["POST"])])


@dataclass
class Deployment:
    spec: RuntimeSpec
    admission: Admission
    model: ScriptedModel

    def review(self, ref: PullRequestRef, source: dict[str, Any]) -> None:
        """Queue the PR's plan and run every job it leads to, here, until none is left."""
        assert enqueue_pr(self.admission, ref, source, again=True)
        run_worker(self.spec, burst=True)


def plan(name: str) -> Plan:
    return Plan(
        name=f"harness-{name}",
        provider="synthetic",
        windows=(Window(name="requests", limit_milli=500 * 1000, duration_ms=3_600_000),),
        source="tests/review_harness.py",
        as_of=dt.date(2026, 12, 7),
    )


@contextlib.contextmanager
def deployment(
    redis: redis_py.Redis,
    redis_url: str,
    unique: str,
    answers: list[Answer],
    **spec_kw: Any,
) -> Iterator[Deployment]:
    """A scripted model served on loopback and a runtime spec around it."""
    model = ScriptedModel(list(answers))
    with serve_in_thread(model.app()) as server:
        account = Account(
            name=f"{unique}-acct",
            provider="synthetic",
            base_url=server.url + "/v1",
            api_key_env=KEY_ENV,
            plan=plan(unique),
            policy=Policy(arrival_margin_ms=200),
        )
        env = {KEY_ENV: KEY, **spec_kw.pop("env", {})}
        spec = RuntimeSpec(
            settings=Settings(redis_url=redis_url, queue_name=f"h-{unique}", accounts=[account]),
            redis_url=redis_url,
            prefix=f"h:{unique}",
            queue_name=f"h-{unique}",
            limiter_prefix=f"h:{unique}",
            model="hf:zai-org/GLM-4.6",
            fairness=Fairness(),
            planning=spec_kw.pop("planning", PlanningConfig(max_message_tokens=4000)),
            retry=RetryPolicy(base_ms=100, cap_ms=500, concurrency_hold_ms=200),
            job_timeout_s=60,
            temperature=0.2,
            env=env,
            **spec_kw,
        )
        admission = Admission(
            redis,
            review_queue(spec.queue_name, redis),
            prefix=spec.prefix,
            fairness=spec.fairness,
            job_timeout_s=spec.job_timeout_s,
            fallback_ms=spec.fallback_ms,
        )
        try:
            yield Deployment(spec, admission, model)
        finally:
            with contextlib.suppress(RuntimeError):
                runtime().close()
