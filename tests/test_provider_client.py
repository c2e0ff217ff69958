"""The provider client: one request per call, every failure a result, and no key leaks."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from scheduler.quota.plans import Account, Plan, Window, get_preset
from workers.providers.classify import ResponseClass, Usage
from workers.providers.client import (
    DEFAULT_TIMEOUT,
    ChatMessage,
    ChatRequest,
    ProviderClient,
    request_cost,
)

KEY = "hunter2-Very.Secret"  # short enough that classify's own heuristics miss it
KEY_ENV = "REVIEWQ_TEST_KEY"
ENV = {KEY_ENV: KEY}
BASE = "https://api.test/openai/v1"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport that records every request and answers with `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def count(self, path_suffix: str = "/chat/completions", host: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if r.url.path.endswith(path_suffix) and (host is None or r.url.host == host)
        )


def make_account(
    name: str = "acct",
    *,
    provider: str = "synthetic",
    base_url: str = BASE,
    key_env: str = KEY_ENV,
    plan: Plan | None = None,
) -> Account:
    return Account(
        name=name,
        provider=provider,
        base_url=base_url,
        api_key_env=key_env,
        plan=plan or get_preset("synthetic"),
    )


def chat(model: str = "hf:org/Model") -> ChatRequest:
    return ChatRequest(model=model, messages=(ChatMessage(role="user", content="review this"),))


def ok_body(content: str = "LGTM", usage: bool = True) -> dict[str, object]:
    body: dict[str, object] = {"choices": [{"message": {"role": "assistant", "content": content}}]}
    if usage:
        body["usage"] = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    return body


def client_with(handler: Handler, **kwargs: object) -> tuple[ProviderClient, Recorder]:
    rec = Recorder(handler)
    account = kwargs.pop("account", None) or make_account()
    assert isinstance(account, Account)
    env = kwargs.pop("env", ENV)
    assert isinstance(env, dict)
    return ProviderClient(account, env=env, transport=rec.transport), rec


def assert_no_key(*texts: object) -> None:
    for text in texts:
        assert KEY not in str(text)
        assert KEY not in repr(text)


def test_ok_posts_once_with_bearer_key_and_reports_usage_and_cost() -> None:
    client, rec = client_with(lambda r: httpx.Response(200, json=ok_body("Looks good")))
    result = client.complete(chat())
    assert result.classified.cls is ResponseClass.OK
    assert result.classified.content == "Looks good"
    assert result.classified.usage == Usage(10, 5, 15)
    assert (result.status, result.sent, result.account) == (200, True, "acct")
    assert result.cost == {"requests_5h": 1000}
    assert result.elapsed_ms >= 0
    [request] = rec.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    sent = json.loads(request.content)
    assert sent["model"] == "hf:org/Model" and sent["stream"] is False
    assert sent["messages"] == [{"role": "user", "content": "review this"}]
    assert "max_tokens" not in sent  # unset fields are not sent as null


def test_no_usage_means_no_actual_cost() -> None:
    client, _ = client_with(lambda r: httpx.Response(200, json=ok_body(usage=False)))
    assert client.complete(chat()).cost is None


def test_a_503_reaches_the_transport_exactly_once() -> None:
    client, rec = client_with(lambda r: httpx.Response(503, text="upstream down"))
    result = client.complete(chat())
    assert result.classified.cls is ResponseClass.TRANSIENT
    assert len(rec.requests) == 1


def test_default_transport_does_not_retry_and_timeout_is_explicit() -> None:
    client = ProviderClient(make_account(), env=ENV)
    assert client.timeout == httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=10.0)
    assert client.timeout is DEFAULT_TIMEOUT
    transport = client._http._transport
    assert isinstance(transport, httpx.HTTPTransport)
    assert transport._pool._retries == 0
    assert client._http.follow_redirects is False


@pytest.fixture
def hangup_server() -> Iterator[tuple[str, list[int]]]:
    """A real TCP server that reads a request and hangs up without answering."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    seen = [0]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            seen[0] += 1
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", seen
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_real_transport_sends_a_failed_request_once(hangup_server: tuple[str, list[int]]) -> None:
    url, seen = hangup_server
    client = ProviderClient(make_account(base_url=url), env=ENV)
    result = client.complete(chat())
    assert result.classified.cls is ResponseClass.TRANSIENT
    assert result.sent is True  # it reached the server: the charge must stand
    assert seen[0] == 1


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        (httpx.ReadTimeout("timed out"), True),
        (httpx.WriteTimeout("timed out"), True),
        (httpx.ConnectTimeout("timed out"), False),
        (httpx.PoolTimeout("timed out"), False),
        (httpx.ConnectError("connection refused"), False),
        (httpx.RemoteProtocolError("server disconnected"), True),
    ],
)
def test_transport_errors_become_transient_results(error: Exception, sent: bool) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise error

    client, rec = client_with(boom)
    result = client.complete(chat())
    assert result.classified.cls is ResponseClass.TRANSIENT
    assert (result.status, result.sent) == (None, sent)
    assert len(rec.requests) == 1


def test_missing_key_needs_a_person_and_names_the_variable_only() -> None:
    client, rec = client_with(lambda r: httpx.Response(200, json=ok_body()), env={})
    result = client.complete(chat())
    assert result.classified.cls is ResponseClass.NEEDS_PERSON
    assert result.classified.code == "missing_key"
    assert KEY_ENV in result.classified.message
    assert result.sent is False
    assert rec.requests == []


def test_blank_key_counts_as_missing() -> None:
    client, rec = client_with(lambda r: httpx.Response(200), env={KEY_ENV: "  "})
    assert client.complete(chat()).classified.code == "missing_key"
    assert rec.requests == []


@pytest.mark.parametrize("base_url", ["ftp://api.test/v1", "http://[::1/v1"])
def test_unusable_base_url_needs_a_person(base_url: str) -> None:
    client = ProviderClient(make_account(base_url=base_url), env=ENV)
    result = client.complete(chat())
    assert result.classified.cls is ResponseClass.NEEDS_PERSON
    assert "base_url" in result.classified.message
    assert result.sent is False


def test_key_is_read_at_call_time() -> None:
    env: dict[str, str] = {}
    client, rec = client_with(lambda r: httpx.Response(200, json=ok_body()), env=env)
    assert client.complete(chat()).classified.code == "missing_key"
    env[KEY_ENV] = KEY
    assert client.complete(chat()).classified.cls is ResponseClass.OK
    assert rec.requests[0].headers["authorization"] == f"Bearer {KEY}"


def leaky(request: httpx.Request) -> httpx.Response:
    """A provider that echoes the credential back in its error and headers."""
    auth = request.headers["authorization"]
    return httpx.Response(
        401,
        json={"error": {"message": f"invalid key {KEY} (header was {auth})"}},
        headers={"x-echo-authorization": auth, "authorization": auth},
    )


def test_key_never_in_messages_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = client_with(leaky)
    result = client.complete(chat())
    assert result.classified.cls is ResponseClass.NEEDS_PERSON
    assert KEY_ENV in result.classified.message
    assert "authorization" not in result.headers
    assert_no_key(result, result.classified, result.classified.message, client)
    assert caplog.records, "the call should be logged"
    for record in caplog.records:
        assert_no_key(record.getMessage(), record.args)


def test_key_scrubbed_from_transport_error_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"proxy refused {request.headers['authorization']}")

    client, _ = client_with(boom)
    result = client.complete(chat())
    assert result.classified.cls is ResponseClass.TRANSIENT
    assert_no_key(result, result.classified.message)
    for record in caplog.records:
        assert_no_key(record.getMessage(), record.args)


@pytest.mark.parametrize("status", [200, 401, 500])
def test_key_never_in_request_data(status: int) -> None:
    """The client is given the key and sends it, in the Authorization header and
    nowhere else: not in the body, the URL or any other header, nor in the request
    object or the result, even when the provider echoes the key back in its error."""

    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        if status == 200:
            return httpx.Response(200, json=ok_body())
        return httpx.Response(status, json={"error": {"message": f"bad header {auth}"}})

    client, rec = client_with(echo)
    request = chat()
    result = client.complete(request)
    (sent,) = rec.requests
    assert sent.headers["authorization"] == f"Bearer {KEY}", "the key was given and sent"
    others = [f"{k}: {v}" for k, v in sent.headers.items() if k.lower() != "authorization"]
    assert others, "the request has other headers to check"
    assert_no_key(sent.content.decode(), sent.url, others, request, request.payload())
    assert_no_key(result, result.classified, dict(result.headers), client)
    assert result.status == status


def test_actual_cost_uses_model_weight_and_a_token_charge_for_money() -> None:
    credits = get_preset("synthetic-credits")
    client, _ = client_with(lambda r: httpx.Response(200, json=ok_body()))
    client = ProviderClient(make_account(plan=credits), env=ENV, transport=client._http._transport)
    result = client.complete(chat("hf:org/Model-flash"))
    assert result.cost == {"requests_5h": 100, "weekly_credits": 1}
    assert request_cost(make_account(plan=credits), "big") == {
        "requests_5h": 1000,
        "weekly_credits": 1,
    }


def test_request_cost_follows_peak_hours() -> None:
    plan = get_preset("zai-pro")
    account = make_account(provider="zai", plan=plan)
    peak = dt.datetime(2026, 9, 8, 7, 0, tzinfo=dt.UTC)  # 15:00 in UTC+8
    off = dt.datetime(2026, 9, 8, 1, 0, tzinfo=dt.UTC)  # 09:00 in UTC+8
    assert request_cost(account, "glm-5.1", peak) == {"prompts_5h": 3000, "prompts_week": 3000}
    assert request_cost(account, "glm-5.1", off) == {"prompts_5h": 2000, "prompts_week": 2000}


def test_cost_time_is_the_callers_clock_so_settle_matches_the_estimate() -> None:
    account = make_account(provider="zai", plan=get_preset("zai-pro"))
    rec = Recorder(lambda r: httpx.Response(200, json=ok_body()))
    client = ProviderClient(account, env=ENV, transport=rec.transport)
    peak = int(dt.datetime(2026, 9, 8, 7, 0, tzinfo=dt.UTC).timestamp() * 1000)
    off = int(dt.datetime(2026, 9, 8, 1, 0, tzinfo=dt.UTC).timestamp() * 1000)
    assert client.complete(chat("glm-5.1"), now_ms=peak).cost == {
        "prompts_5h": 3000,
        "prompts_week": 3000,
    }
    result = client.complete(chat("glm-5.1"), now_ms=off)
    assert result.started_at == dt.datetime(2026, 9, 8, 1, 0, tzinfo=dt.UTC)
    assert result.cost == {"prompts_5h": 2000, "prompts_week": 2000}


def test_get_json_sends_bearer_or_raw_key() -> None:
    client, rec = client_with(lambda r: httpx.Response(200, json={"ok": True}))
    assert client.get_json("https://api.test/v2/quotas").data == {"ok": True}
    assert client.get_json("https://api.test/q", auth="raw").error is None
    assert [r.headers["authorization"] for r in rec.requests] == [f"Bearer {KEY}", KEY]


def test_get_json_failures_are_values_without_the_key() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"no route, auth={request.headers['authorization']}")

    client, _ = client_with(boom)
    fetched = client.get_json("https://api.test/v2/quotas")
    assert fetched.data is None and fetched.error
    assert_no_key(fetched)
    client, _ = client_with(lambda r: httpx.Response(500, text="oops"))
    assert client.get_json("https://api.test/v2/quotas").error == "the body is not JSON"
    client, _ = client_with(lambda r: httpx.Response(403, json={"error": "no"}))
    assert client.get_json("https://api.test/v2/quotas").error == "HTTP 403"


def test_origin_drops_the_api_path() -> None:
    account = make_account(base_url="https://api.z.ai:8443/api/coding/paas/v4")
    assert ProviderClient(account, env=ENV).origin == "https://api.z.ai:8443"


def test_chat_request_rejects_unknown_fields_and_empty_messages() -> None:
    with pytest.raises(ValueError):
        ChatRequest.model_validate({"model": "m", "messages": []})
    with pytest.raises(ValueError):
        ChatRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "api_key": KEY}
        )


def test_window_plans_build_the_cost_of_each_window() -> None:
    plan = Plan(
        name="two",
        provider="synthetic",
        windows=(
            Window(name="a", limit=10, duration="1h"),
            Window(name="b", limit=5, duration="1h", unit="credits"),
        ),
        source="tests",
        as_of=dt.date(2026, 9, 1),
    )
    assert request_cost(make_account(plan=plan), "m") == {"a": 1000, "b": 1}
