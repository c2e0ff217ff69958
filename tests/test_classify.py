"""Every row of the provider-facts table, in each envelope the providers use."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from workers.providers import DEFAULT_MARGIN_MS, Classified, ResponseClass, Usage, classify

T, W = ResponseClass.TRANSIENT, ResponseClass.WINDOW_EXHAUSTED
P, B, G = ResponseClass.NEEDS_PERSON, ResponseClass.BAD_REQUEST, ResponseClass.GARBAGE

NOW = 1_788_900_000_000  # 2026-09-08T20:40:00Z
# "2026-09-09 05:38:28" Beijing == 2026-09-08T21:38:28Z (hand-checked in test_resets).
RESET = 1_788_903_508_000
RESET_AT = RESET + DEFAULT_MARGIN_MS
RESET_TEXT = "Your limit will reset at 2026-09-09 05:38:28"
FIVE_H = f"Usage limit reached for 5 hour. {RESET_TEXT}"
WEEKLY = f"Weekly/Monthly Limit Exhausted. {RESET_TEXT}"
SYN_429 = "You've exceeded your subscription rate limits. Upgrade, or try again later. ..."
SYN_402 = "Insufficient quota and token balance ..."
TICK = "2026-09-08T20:55:00Z"
TICK_MS = 1_788_900_900_000
REGEN_MS = 1_788_908_400_000  # 2026-09-08T23:00:00Z
QUOTAS = json.dumps(
    {
        "rollingFiveHourLimit": {"remaining": 0, "max": 500, "limited": True, "nextTickAt": TICK},
        "weeklyTokenLimit": {"remainingCredits": "$0.00", "nextRegenAt": "2026-09-08T23:00:00Z"},
    }
)

Envelope = Callable[[str, str | None], bytes]


def openai_style(message: str, code: str | None) -> bytes:
    """`{"error": {"code": "1308", "message": ...}}`: Z.AI's OpenAI-compatible base."""
    error: dict[str, str] = {"message": message}
    if code is not None:
        error["code"] = code
    return json.dumps({"error": error}).encode()


def anthropic_style(message: str, code: str | None) -> bytes:
    """Z.AI's Anthropic-compatible base wraps the same content as `[code][text][req-id]`."""
    error = {"type": "rate_limit_error", "message": f"[{code}][{message}][req-id]"}
    if code is None:
        error["message"] = message
    else:
        error["code"] = code
    return json.dumps({"type": "error", "error": error}).encode()


ENVELOPES = [pytest.param(openai_style, id="openai"), pytest.param(anthropic_style, id="anthropic")]

# (code, provider text, class, window hint, too_long). Only the 1308 and 1310 texts are
# quoted in the facts file; the others paraphrase the meaning it gives for the code.
ZAI_ROWS = [
    ("1302", "High concurrency usage of this API, please reduce concurrency", T, None, False),
    ("1303", "High frequency usage of this API, please reduce frequency", T, None, False),
    ("1305", "The service may be temporarily overloaded, please try again later", T, None, False),
    ("1304", f"Daily call limit reached. {RESET_TEXT}", W, "daily", False),
    *[(c, FIVE_H, W, "5h", False) for c in ("1308", "1316", "1318", "1320")],
    *[(c, WEEKLY, W, "weekly", False) for c in ("1310", "1317", "1319", "1321")],
    ("1113", "Insufficient balance or no resource package. Please recharge.", P, None, False),
    ("1309", "Your GLM Coding Plan package has expired", P, None, False),
    ("1311", "The requested model is not included in your plan", P, None, False),
    ("1313", "Your account is restricted under the fair use policy", P, None, False),
    ("1314", "This product is not available for the current API key", P, None, False),
    ("1315", "The current package does not support this request", P, None, False),
    ("1210", "Invalid API parameter, please check the documentation", B, None, False),
    ("1211", "Unknown Model, please check the model code", B, None, False),
    ("1214", "Invalid messages parameter", B, None, False),
    ("1261", "Prompt exceeds max length", B, None, True),
    ("1301", "The input contains unsafe or sensitive content", B, None, False),
]


def run(
    status: int | None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    error: Exception | None = None,
    provider: str | None = None,
    key_env: str | None = None,
) -> Classified:
    return classify(
        status, headers or {}, body, now_ms=NOW, error=error, provider=provider, key_env=key_env
    )


@pytest.mark.parametrize("envelope", ENVELOPES)
@pytest.mark.parametrize(
    ("code", "text", "cls", "hint", "too_long"), [pytest.param(*r, id=r[0]) for r in ZAI_ROWS]
)
def test_zai_business_code_decides_not_http_status(
    envelope: Envelope, code: str, text: str, cls: ResponseClass, hint: str | None, too_long: bool
) -> None:
    # Z.AI sends nearly everything as a 429 with no headers at all.
    got = run(429, envelope(text, code))
    assert (got.cls, got.code, got.window_hint, got.too_long) == (cls, code, hint, too_long)
    assert got.message.startswith(f"{code} from zai: ")
    assert got.reset_at_ms == (RESET_AT if cls is W else None)
    if cls is W:
        assert "blocked until 2026-09-08T21:38:30Z" in got.message


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_only_a_concurrency_refusal_asks_to_hold_the_slot(envelope: Envelope) -> None:
    """Z.AI's 1302 is the one answer meaning "fewer calls in flight": `attempt` holds
    the refused slot on the flag alone, never on the code."""
    text = next(text for code, text, *_ in ZAI_ROWS if code == "1302")
    refused = run(429, envelope(text, "1302"))
    assert (refused.cls, refused.code, refused.concurrency_refusal) == (T, "1302", True)
    others = [run(429, envelope(text, code)) for code, text, *_ in ZAI_ROWS if code != "1302"]
    others += [run(429, b"slow down"), run(503, b""), run(200, json.dumps({"x": 1}).encode())]
    assert [c.code for c in others if c.concurrency_refusal] == []


def test_zai_person_messages_say_what_to_do() -> None:
    fair_use = run(429, openai_style("restricted", "1313")).message
    assert "never retries this automatically" in fair_use and "contact Z.AI" in fair_use
    balance = run(429, openai_style("Insufficient balance", "1113")).message
    assert "Coding Plan key" in balance and "pay-per-token" in balance


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("您的限额将在 2026-09-09 05:38:28 重置", RESET_AT, id="chinese"),
        pytest.param("Your limit will reset at 2026-01-01 00:00:00", None, id="past-ignored"),
        pytest.param("Usage limit reached for 5 hour.", None, id="no-time"),
    ],
)
def test_zai_reset_text_variants(text: str, expected: int | None) -> None:
    got = run(429, openai_style(text, "1308"))
    assert (got.cls, got.reset_at_ms) == (W, expected)
    if expected is None:
        assert "reset time unknown" in got.message


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        pytest.param(429, T, id="429"),
        pytest.param(500, T, id="500"),
        pytest.param(400, B, id="400"),
    ],
)
def test_unknown_zai_code_falls_back_on_http_status(status: int, cls: ResponseClass) -> None:
    got = run(status, openai_style("something new", "1399"))
    assert (got.cls, got.code) == (cls, "1399")


def test_unknown_code_with_reset_text_is_still_a_window() -> None:
    got = run(429, openai_style(FIVE_H, "1399"))
    assert (got.cls, got.window_hint, got.reset_at_ms) == (W, "5h", RESET_AT)


SYN = {"x-synthetic-quotas": QUOTAS}


def string_error(message: str) -> bytes:
    """Synthetic's `{"error": "..."}`: the error is a string, not an object."""
    return json.dumps({"error": message}).encode()


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "hint", "reset"),
    [
        pytest.param(429, string_error(SYN_429), SYN, W, "5h", TICK_MS, id="syn-429-header"),
        pytest.param(429, string_error(SYN_429), {}, W, "5h", None, id="syn-429-no-header"),
        pytest.param(429, string_error("slow down"), SYN, W, "5h", TICK_MS, id="syn-limited-flag"),
        pytest.param(402, string_error(SYN_402), SYN, W, "credits", REGEN_MS, id="syn-402"),
        pytest.param(402, SYN_402.encode(), {}, W, "credits", None, id="syn-402-plain-text"),
        pytest.param(402, string_error("Payment required"), {}, P, None, None, id="other-402"),
    ],
)
def test_synthetic_rows(
    status: int,
    body: bytes,
    headers: dict[str, str],
    cls: ResponseClass,
    hint: str | None,
    reset: int | None,
) -> None:
    got = run(status, body, headers)
    expected_reset = None if reset is None else reset + DEFAULT_MARGIN_MS
    assert (got.cls, got.window_hint, got.reset_at_ms) == (cls, hint, expected_reset)
    assert got.code == str(status)


@pytest.mark.parametrize("envelope", ENVELOPES)
@pytest.mark.parametrize(
    ("status", "text", "cls", "too_long", "says"),
    [
        pytest.param(401, "Invalid API key", P, False, "$SYNTHETIC_API_KEY was rejected", id="401"),
        pytest.param(403, "Forbidden", P, False, "$SYNTHETIC_API_KEY may not use", id="403"),
        pytest.param(404, "model not found", P, False, "hf:org/Model", id="404"),
        pytest.param(400, "invalid temperature", B, False, "not retried", id="400"),
        pytest.param(400, "maximum context length is 131072", B, True, "split", id="400-ctx"),
        pytest.param(400, "prompt is too long: 250000 tokens", B, True, "split", id="400-long"),
        pytest.param(413, "Request Entity Too Large", B, True, "split", id="413"),
        pytest.param(500, "Internal Server Error", T, False, "retrying", id="500"),
        pytest.param(502, "Bad Gateway", T, False, "retrying", id="502"),
        pytest.param(503, "Service Unavailable", T, False, "retrying", id="503"),
        pytest.param(529, "Overloaded", T, False, "retrying", id="529"),
        pytest.param(429, "Rate limit exceeded", T, False, "without a quota signal", id="429"),
    ],
)
def test_http_status_rows(
    envelope: Envelope,
    status: int,
    text: str,
    cls: ResponseClass,
    too_long: bool,
    says: str,
) -> None:
    got = run(status, envelope(text, None), provider="synthetic")
    assert (got.cls, got.code, got.too_long, got.reset_at_ms) == (cls, str(status), too_long, None)
    assert got.message.startswith(f"{status} from synthetic: ") and says in got.message


def test_401_names_the_configured_env_var() -> None:
    got = run(401, b"", provider="synthetic", key_env="SYN_TEAM_KEY")
    assert "401 from synthetic: the API key in $SYN_TEAM_KEY was rejected; check it" in got.message
    assert "the API key in $TEAM_KEY was rejected" in run(401, key_env="TEAM_KEY").message


@pytest.mark.parametrize(
    ("headers", "cls", "reset"),
    [
        pytest.param({}, T, None, id="bare-429"),
        pytest.param({"Retry-After": "30"}, T, NOW + 30_000, id="retry-after-kept"),
        pytest.param({"retry-after-ms": "1500"}, T, NOW + 1_500, id="retry-after-ms-kept"),
        pytest.param(
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"},
            W,
            NOW + 360_000,
            id="openai-remaining-0",
        ),
        pytest.param(
            {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1s"},
            T,
            NOW + 1_000,
            id="openai-tokens-only",
        ),
        pytest.param(
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2026-09-08T21:38:28Z",
            },
            W,
            RESET,
            id="anthropic-remaining-0",
        ),
    ],
)
def test_generic_429(headers: dict[str, str], cls: ResponseClass, reset: int | None) -> None:
    got = run(429, openai_style("Rate limit reached", None), headers)
    expected = None if reset is None else reset + DEFAULT_MARGIN_MS
    assert (got.cls, got.reset_at_ms, got.window_hint) == (cls, expected, None)


def test_openai_insufficient_quota_needs_a_person() -> None:
    body = json.dumps({"error": {"code": "insufficient_quota", "message": "check billing"}})
    assert run(429, body.encode()).cls is P


def completion(message: object, **extra: object) -> bytes:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    return json.dumps({"choices": [{"message": message, **extra}], "usage": usage}).encode()


def test_ok_carries_content_and_usage() -> None:
    got = run(200, completion({"role": "assistant", "content": "LGTM"}))
    assert (got.cls, got.code, got.content) == (ResponseClass.OK, "200", "LGTM")
    assert got.usage == Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    assert "LGTM" not in repr(got)


def test_ok_accepts_content_parts() -> None:
    parts = [{"type": "text", "text": "LG"}, {"type": "text", "text": "TM"}]
    assert run(200, completion({"content": parts})).content == "LGTM"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>502 Bad Gateway</html>", id="not-json"),
        pytest.param(b"", id="empty-body"),
        pytest.param(b'{"choices": []}', id="empty-choices"),
        pytest.param(b'{"id": "x"}', id="no-choices"),
        pytest.param(b'{"choices": [{"index": 0}]}', id="no-message"),
        pytest.param(completion({"role": "assistant"}), id="no-content"),
        pytest.param(completion({"content": None}), id="null-content"),
        pytest.param(completion({"content": ""}, finish_reason="length"), id="empty-length"),
    ],
)
def test_200_without_a_usable_answer_is_garbage(body: bytes) -> None:
    got = run(200, body)
    assert (got.cls, got.content, got.usage) == (G, None, None)
    assert got.message.startswith("200 from the provider: unusable answer")


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        pytest.param(httpx.ReadTimeout("timed out"), T, id="read-timeout"),
        pytest.param(httpx.ConnectTimeout("timed out"), T, id="connect-timeout"),
        pytest.param(httpx.ConnectError("connection refused"), T, id="connect-error"),
        pytest.param(httpx.ReadError("connection reset by peer"), T, id="connection-reset"),
        pytest.param(httpx.RemoteProtocolError("peer closed connection"), T, id="closed"),
        pytest.param(httpx.UnsupportedProtocol("no scheme"), P, id="bad-base-url"),
        pytest.param(ValueError("bug"), G, id="other-exception"),
    ],
)
def test_transport_errors(error: Exception, cls: ResponseClass) -> None:
    got = run(None, error=error, provider="zai")
    assert (got.cls, got.code, got.reset_at_ms) == (cls, type(error).__name__, None)


def test_no_status_and_no_error_is_garbage() -> None:
    assert run(None).cls is G


FAKE_KEYS = [
    pytest.param("sk-test-FAKEKEY0123456789abcdef", id="openai-style"),
    pytest.param("0123456789abcdef0123456789abcdef.FaKeKeY12345abcde", id="zai-style"),
    pytest.param("syn_FAKEKEY0123456789", id="synthetic-style"),
    pytest.param("FAKE-KEY-x1", id="short-echoed-literal"),
]


@pytest.mark.parametrize("key", FAKE_KEYS)
@pytest.mark.parametrize(
    ("status", "body_for"),
    [
        pytest.param(401, lambda k: openai_style(f"Invalid API key: Bearer {k}", None), id="401"),
        pytest.param(401, lambda k: f"bad key {k}".encode(), id="401-plain-text"),
        pytest.param(429, lambda k: openai_style(f"key {k} insufficient", "1113"), id="1113"),
        pytest.param(429, lambda k: string_error(f"{SYN_429} key={k}"), id="syn-429"),
        pytest.param(400, lambda k: anthropic_style(f"bad request for {k}", None), id="400"),
        pytest.param(200, lambda k: f"not json {k}".encode(), id="garbage"),
    ],
)
def test_messages_never_carry_the_key(
    key: str, status: int, body_for: Callable[[str], bytes]
) -> None:
    headers = {"Authorization": f"Bearer {key}", "X-Api-Key": key}
    got = run(status, body_for(key), headers)
    assert key not in got.message and key not in repr(got)
    assert key[:10] not in got.message
    assert "[redacted]" in got.message and "]]" not in got.message


def test_redaction_leaves_ordinary_words_alone() -> None:
    got = run(400, openai_style("Token limit: basic plan allows 4096 output tokens", None))
    assert 'provider said: "Token limit: basic plan allows 4096 output tokens"' in got.message


def test_transport_error_text_is_redacted() -> None:
    key = "sk-test-FAKEKEY0123456789abcdef"
    got = run(None, error=httpx.ConnectError(f"proxy said Bearer {key}"))
    assert key not in got.message


def test_real_httpx_responses_through_mock_transport() -> None:
    """Real httpx.Response objects: mixed-case headers, bytes bodies, raised timeouts."""
    replies = {
        "/zai": httpx.Response(429, json={"error": {"code": "1308", "message": FIVE_H}}),
        "/syn": httpx.Response(
            429, headers={"X-Synthetic-Quotas": QUOTAS}, json={"error": SYN_429}
        ),
        "/openai": httpx.Response(
            429,
            headers={"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "6m0s"},
            json={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
        ),
        "/busy": httpx.Response(503, headers={"Retry-After": "7"}, text="busy"),
        "/ok": httpx.Response(200, content=completion({"content": "LGTM"})),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            raise httpx.ReadTimeout("timed out", request=request)
        return replies[request.url.path]

    expected = {
        "/zai": (W, RESET_AT),
        "/syn": (W, TICK_MS + DEFAULT_MARGIN_MS),
        "/openai": (W, NOW + 360_000 + DEFAULT_MARGIN_MS),
        "/busy": (T, NOW + 7_000 + DEFAULT_MARGIN_MS),
        "/ok": (ResponseClass.OK, None),
    }
    with httpx.Client(transport=httpx.MockTransport(handler), base_url="https://x.test") as client:
        for path, want in expected.items():
            resp = client.post(path, json={"model": "glm-4.6"})
            got = classify(resp.status_code, resp.headers, resp.content, now_ms=NOW)
            assert (got.cls, got.reset_at_ms) == want, path
        with pytest.raises(httpx.ReadTimeout) as caught:
            client.post("/slow")
    assert classify(None, {}, b"", now_ms=NOW, error=caught.value).cls is T


# --------------------------------------------------- the status rules, at their edges


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (299, ResponseClass.GARBAGE),  # a 2xx without choices is no answer
        (300, ResponseClass.GARBAGE),  # not a 2xx: an unexpected status
        (399, ResponseClass.GARBAGE),
        (400, ResponseClass.BAD_REQUEST),
        (499, ResponseClass.BAD_REQUEST),
        (500, ResponseClass.TRANSIENT),
        (503, ResponseClass.TRANSIENT),
    ],
)
def test_status_ranges(status: int, cls: ResponseClass) -> None:
    got = classify(status, {}, b'{"error": {"message": "x"}}', now_ms=0, provider="openai")
    assert got.cls is cls, got


@pytest.mark.parametrize(
    ("body", "headers", "cls"),
    [
        (b'{"error": {"message": "Insufficient quota for this key"}}', {}, "credits"),
        (b'{"error": {"message": "Your token balance is empty"}}', {}, "credits"),
        (b'{"error": {"message": "Payment required"}}', {}, None),
    ],
)
def test_402_is_credits_only_with_a_credits_signal(
    body: bytes, headers: dict[str, str], cls: str | None
) -> None:
    got = classify(402, headers, body, now_ms=0, provider="openai")
    if cls is None:
        assert got.cls is ResponseClass.NEEDS_PERSON, got
    else:
        assert got.cls is ResponseClass.WINDOW_EXHAUSTED and got.window_hint == cls, got


@pytest.mark.parametrize("remaining", ["0", "0.0", " 0 "])
def test_429_with_no_requests_remaining_is_exhausted(remaining: str) -> None:
    headers = {"x-ratelimit-remaining-requests": remaining}
    got = classify(429, headers, b"{}", now_ms=0, provider="openai")
    assert got.cls is ResponseClass.WINDOW_EXHAUSTED, got
    assert classify(429, {}, b"{}", now_ms=0, provider="openai").cls is ResponseClass.TRANSIENT


def test_usage_details_are_read_when_they_are_counts() -> None:
    body = {
        "choices": [{"message": {"role": "assistant", "content": "ok"}}],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 7},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    }
    got = classify(200, {}, json.dumps(body).encode(), now_ms=0, provider="openai")
    assert got.usage == Usage(10, 5, 15, cached_tokens=7, reasoning_tokens=3)
    body["usage"] = {
        "prompt_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": True},
        "completion_tokens_details": [3],
    }
    got = classify(200, {}, json.dumps(body).encode(), now_ms=0, provider="openai")
    assert got.usage == Usage(prompt_tokens=10)
    body["usage"] = {"prompt_tokens": -1, "completion_tokens": "5"}
    got = classify(200, {}, json.dumps(body).encode(), now_ms=0, provider="openai")
    assert got.usage is None


def test_nothing_to_classify() -> None:
    got = classify(None, {}, b"", now_ms=0)
    assert (got.cls, got.code) == (ResponseClass.GARBAGE, "none")


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("Usage limit reached for 5 hour. Your limit will reset at 2026-09-09 05:38:28", "5h"),
        ("Weekly usage limit reached. Your limit will reset at 2026-09-09 05:38:28", "weekly"),
        ("Usage limit reached. Your limit will reset at 2026-09-09 05:38:28", None),
    ],
)
def test_a_plain_text_429_names_its_window_and_reset(text: str, hint: str | None) -> None:
    got = classify(429, {}, text.encode(), now_ms=1_788_900_000_000, provider="zai")
    assert got.cls is ResponseClass.WINDOW_EXHAUSTED, got
    assert got.window_hint == hint
    assert got.reset_at_ms is not None and got.reset_at_ms >= 1_788_903_508_000
