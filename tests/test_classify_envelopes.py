"""`classify`, one field at a time: each error envelope with a single field, usage and
content of the wrong type, the status edges, and the exact message of every path.

test_classify.py gives every envelope all its fields, so a rule that read the wrong
field (the `type` for the `message`, `msg` for `message`, a code that is a list) could
not be told from the right one. Here each shape carries one field, and the class,
code, reset or message shows whether that field was read. Mutation testing found these
gaps (docs/testing.md, "Mutation testing").

Shapes: `{"error": {"code", "message", "type"}}` (OpenAI, Z.AI's OpenAI-compatible
base, Anthropic's `{"type": "error", "error": {"type", "message"}}`), Z.AI's
`{"success": false, "code", "msg"}`, Synthetic's `{"error": "text"}`, a bare
`{"message"}`, and plain text.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest

from workers.providers import DEFAULT_MARGIN_MS, Classified, ResponseClass, Usage, classify

T, W = ResponseClass.TRANSIENT, ResponseClass.WINDOW_EXHAUSTED
P, B, G = ResponseClass.NEEDS_PERSON, ResponseClass.BAD_REQUEST, ResponseClass.GARBAGE
OK = ResponseClass.OK

NOW = 1_788_900_000_000  # 2026-09-08T20:40:00Z
# Z.AI's 5-hour answer as a live 429 carried it (hugalafutro/model-hotel PR #955);
# "2026-09-09 05:38:28" Beijing time is 2026-09-08T21:38:28Z.
FIVE_H = "Usage limit reached for 5 hour. Your limit will reset at 2026-09-09 05:38:28"
RESET_AT = 1_788_903_508_000 + DEFAULT_MARGIN_MS
RESET_ISO = "2026-09-08T21:38:30Z"  # RESET_AT, as a message prints it


def run(
    status: int | None,
    body: object = b"",
    headers: dict[str, str] | None = None,
    *,
    error: Exception | None = None,
    provider: str | None = None,
) -> Classified:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify(status, headers or {}, raw, now_ms=NOW, error=error, provider=provider)


# --- each envelope, one field at a time ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"error": {"message": FIVE_H}}, "429", id="error.message"),
        pytest.param({"success": False, "code": 1399, "msg": FIVE_H}, "1399", id="zai-msg"),
        pytest.param({"success": False, "code": 1399, "message": FIVE_H}, "1399", id="zai-message"),
        pytest.param({"message": FIVE_H}, "429", id="bare-message"),
        pytest.param({"error": FIVE_H}, "429", id="error-string"),
        pytest.param(FIVE_H.encode(), "429", id="plain-text"),
    ],
)
def test_the_providers_words_are_read_from_each_shape(body: object, code: str) -> None:
    """A 429 is a blocked window only if the provider's words name a reset, so the
    class shows whether the field holding the words was read."""
    got = run(429, body, provider="zai")
    assert (got.cls, got.code, got.window_hint, got.reset_at_ms) == (W, code, "5h", RESET_AT)
    assert f'(provider said: "{FIVE_H}")' in got.message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"error": {"code": "1308"}}, id="error.code-string"),
        pytest.param({"error": {"code": 1308}}, id="error.code-int"),
        pytest.param({"success": False, "code": 1308}, id="zai-code-int"),
        pytest.param({"success": False, "code": " 1308 "}, id="zai-code-padded"),
    ],
)
def test_a_business_code_alone_decides(body: object) -> None:
    got = run(429, body)
    assert (got.cls, got.code, got.window_hint, got.reset_at_ms) == (W, "1308", "5h", None)
    assert got.message == "1308 from zai: 5-hour window used up; reset time unknown"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"success": True, "code": 1308, "msg": "Operation successful"}, id="true"),
        pytest.param({"success": "false", "code": 1308}, id="string-false"),
        pytest.param({"error": {"code": True}}, id="bool-code"),
        pytest.param({"error": {"code": ["1308"]}}, id="list-code"),
        pytest.param({"error": {"code": "  "}}, id="blank-code"),
    ],
)
def test_no_business_code_unless_it_is_one(body: object) -> None:
    """Only `success: false` opens Z.AI's envelope, and a code is a string or an int."""
    got = run(429, body, provider="zai")
    assert (got.cls, got.code, got.window_hint) == (T, "429", None)


def test_an_error_type_alone_is_the_providers_words() -> None:
    """Anthropic's `{"type": "error", "error": {"type": ...}}`, here without a message."""
    got = run(529, {"type": "error", "error": {"type": "overloaded_error"}}, provider="anthropic")
    said = '(provider said: "overloaded_error")'
    assert got.message == f"529 from anthropic: server-side error; retrying shortly {said}"
    both = run(529, {"error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert both.message.endswith('(provider said: "Overloaded")')  # the message wins


def test_zai_msg_wins_over_message() -> None:
    got = run(429, {"success": False, "code": 1399, "msg": FIVE_H, "message": "Rate limited"})
    assert (got.cls, got.reset_at_ms) == (W, RESET_AT) and FIVE_H in got.message


@pytest.mark.parametrize("body", [["rate limited"], "rate limited", 42, True])
def test_json_that_is_not_an_object_has_no_words(body: object) -> None:
    got = run(503, body, provider="openai")
    assert got.message == "503 from openai: server-side error; retrying shortly"


def test_a_body_that_is_not_utf8_is_read_with_replacements() -> None:
    got = run(503, b"\xffbusy\xfe", provider="openai")
    assert got.cls is T
    assert got.message.endswith('(provider said: "\ufffdbusy\ufffd")')


def test_a_reset_anywhere_in_the_json_body_counts() -> None:
    """The reset is read from the whole body, not only the words: here Z.AI's quota
    entry (`data.limits`, as its quota endpoint sends it) beside a message with none."""
    limits = [{"type": "TOKENS_LIMIT", "percentage": 100, "nextResetTime": NOW + 3_600_000}]
    body = {"success": False, "code": 1308, "msg": "Usage limit reached for 5 hour."}
    got = run(429, {**body, "data": {"limits": limits}})
    assert (got.cls, got.reset_at_ms) == (W, NOW + 3_600_000 + DEFAULT_MARGIN_MS)


# --- too long: from the code alone, and never from a code of the wrong type ----------


@pytest.mark.parametrize(
    ("status", "body", "too_long"),
    [
        pytest.param(429, {"error": {"code": "1261"}}, True, id="zai-1261-code-only"),
        pytest.param(429, {"success": False, "code": 1261}, True, id="zai-1261-envelope"),
        pytest.param(
            400,
            {"error": {"code": "context_length_exceeded", "message": "Request rejected"}},
            True,
            id="openai-code-only-says-it",
        ),
        pytest.param(
            400,
            {"error": {"code": {"reason": "context_length_exceeded"}, "message": "bad"}},
            False,
            id="code-not-a-string",
        ),
        pytest.param(400, {"error": {"message": "invalid temperature"}}, False, id="other-400"),
    ],
)
def test_too_long_is_read_from_the_code(status: int, body: object, too_long: bool) -> None:
    got = run(status, body)
    assert (got.cls, got.too_long) == (B, too_long)


# --- usage and content of the wrong type ---------------------------------------------


def completion(content: object, **usage: object) -> dict[str, object]:
    return {"choices": [{"message": {"role": "assistant", "content": content}}], "usage": usage}


def test_zero_is_a_count() -> None:
    body = completion("LGTM", prompt_tokens=0, completion_tokens=0, total_tokens=0)
    body["usage"] |= {"prompt_tokens_details": {"cached_tokens": 0}}  # type: ignore[operator]
    got = run(200, body)
    assert got.usage == Usage(0, 0, 0, cached_tokens=0)


@pytest.mark.parametrize("value", [True, -1, 1.5, "3", None])
def test_a_count_is_a_non_negative_int(value: object) -> None:
    body = completion("LGTM", prompt_tokens=value, completion_tokens=2)
    assert run(200, body).usage == Usage(completion_tokens=2)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(" \n\t ", id="whitespace"),
        pytest.param(7, id="number"),
        pytest.param([{"type": "text", "text": "  "}], id="blank-parts"),
        pytest.param([{"type": "text", "text": 7}, "LGTM"], id="parts-without-text"),
    ],
)
def test_content_without_text_is_no_answer(content: object) -> None:
    got = run(200, completion(content))
    assert (got.cls, got.code, got.content) == (G, "200", None)


def test_a_choice_that_is_not_an_object_is_no_answer() -> None:
    got = run(200, {"choices": ["LGTM"]})
    assert (got.cls, got.code, got.content) == (G, "200", None)


@pytest.mark.parametrize("status", [300, 301, 399])
def test_a_3xx_with_an_answer_is_still_not_an_answer(status: int) -> None:
    got = run(status, completion("LGTM"), provider="openai")
    assert (got.cls, got.content) == (G, None)
    assert got.message == f"{status} from openai: unusable answer: unexpected HTTP status {status}"


@pytest.mark.parametrize("status", [200, 201, 299])
def test_every_2xx_with_an_answer_is_ok(status: int) -> None:
    got = run(status, completion("LGTM"))
    assert (got.cls, got.code, got.message, got.content) == (OK, str(status), "ok", "LGTM")


# --- times in messages are UTC whatever the machine's zone ---------------------------


@pytest.fixture
def shanghai_clock() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.usefixtures("shanghai_clock")
def test_reset_times_in_messages_are_utc_on_a_machine_in_another_zone() -> None:
    assert time.localtime(0).tm_hour == 8  # the zone took effect: UTC+8
    got = run(429, {"error": {"code": "1308", "message": FIVE_H}})
    assert f"5-hour window used up; blocked until {RESET_ISO} (" in got.message
    waited = run(429, b"", {"Retry-After": "30"}, provider="openai")
    assert "(not before 2026-09-08T20:40:32Z)" in waited.message


def test_transport_errors_name_the_provider_even_when_not_told() -> None:
    got = run(None, error=httpx.ConnectError("connection refused"))
    assert got.message == "ConnectError talking to the provider (connection refused); retrying"


# --- the exact message of every path --------------------------------------------------
# Messages reach logs, alerts and PR comments and tell a person what to do; each row
# pins one path's words, so a changed rule that still picks the right class but says
# the wrong thing (or "None") fails here.

SAID = '(provider said: "{}")'
MESSAGES = [
    (
        "zai-1302",
        dict(status=429, body={"error": {"code": "1302", "message": "High concurrency"}}),
        "1302 from zai: too many concurrent requests; retrying shortly with less concurrency "
        + SAID.format("High concurrency"),
    ),
    (
        "zai-1261",
        dict(status=429, body={"error": {"code": "1261"}}),
        "1261 from zai: prompt too long for the model's context; split the input into "
        "smaller chunks",
    ),
    (
        "402-credits",
        dict(status=402, body={"error": "Insufficient quota"}, provider="synthetic"),
        "402 from synthetic: weekly token credits used up; reset time unknown "
        + SAID.format("Insufficient quota"),
    ),
    (
        "402-billing",
        dict(status=402, body={"error": {"message": "Payment required"}}, provider="openai"),
        "402 from openai: payment required; top up the account or check billing "
        + SAID.format("Payment required"),
    ),
    (
        "429-insufficient-quota",
        dict(status=429, body={"error": {"code": "insufficient_quota"}}, provider="openai"),
        "429 from openai: the billing quota is used up; add credit or raise the limit",
    ),
    (
        "429-subscription",
        dict(status=429, body={"error": "subscription rate limits"}, provider="synthetic"),
        "429 from synthetic: 5-hour request quota used up; reset time unknown "
        + SAID.format("subscription rate limits"),
    ),
    (
        "429-no-requests-left",
        dict(status=429, headers={"x-ratelimit-remaining-requests": "0"}, provider="openai"),
        "429 from openai: request quota used up; reset time unknown",
    ),
    (
        "429-zai-text",
        dict(status=429, body=FIVE_H.encode(), provider="zai"),
        f"429 from zai: usage limit reached; blocked until {RESET_ISO} " + SAID.format(FIVE_H),
    ),
    (
        "429-bare",
        dict(status=429, provider="openai"),
        "429 from openai: rate limited without a quota signal; retrying after a short wait",
    ),
    (
        "429-retry-after",
        dict(status=429, headers={"Retry-After": "30"}, provider="openai"),
        "429 from openai: rate limited without a quota signal; retrying after a short wait "
        "(not before 2026-09-08T20:40:32Z)",
    ),
    (
        "503",
        dict(status=503, provider="openai"),
        "503 from openai: server-side error; retrying shortly",
    ),
    ("400", dict(status=400, provider="openai"), "400 from openai: request rejected; not retried"),
    (
        "200-not-an-object",
        dict(status=200, body=b"[]", provider="openai"),
        "200 from openai: unusable answer: the body is not a JSON object",
    ),
    (
        "200-no-choices",
        dict(status=200, body={"choices": []}, provider="openai"),
        "200 from openai: unusable answer: the body has no choices",
    ),
    (
        "200-cut-short",
        dict(status=200, body={"choices": [{"finish_reason": "length"}]}, provider="openai"),
        "200 from openai: unusable answer: the first choice has no message content "
        "(finish_reason=length: raise max_tokens)",
    ),
    (
        "200-stopped-empty",
        dict(status=200, body={"choices": [{"finish_reason": "stop"}]}, provider="openai"),
        "200 from openai: unusable answer: the first choice has no message content",
    ),
    (
        "bad-base-url",
        dict(status=None, error=httpx.UnsupportedProtocol("no scheme"), provider="zai"),
        "UnsupportedProtocol calling zai: the base_url is not an http(s) URL; fix it in config",
    ),
    (
        "timeout",
        dict(status=None, error=httpx.ReadTimeout("timed out"), provider="zai"),
        "ReadTimeout from zai: no answer in time; retrying (large models cold-start: keep the "
        "timeout generous)",
    ),
    (
        "other-exception",
        dict(status=None, error=ValueError("bug"), provider="zai"),
        "ValueError calling zai (bug); the answer is unusable",
    ),
    ("nothing", dict(status=None), "no HTTP status and no error: nothing to classify"),
    (
        "401-unknown-provider",
        dict(status=401),
        "401 from the provider: the API key in the account's api_key_env was rejected; check it",
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), [pytest.param(k, m, id=i) for i, k, m in MESSAGES])
def test_every_path_says_what_to_do(kwargs: dict[str, object], message: str) -> None:
    assert run(**kwargs).message == message  # type: ignore[arg-type]


# --- which provider a message names when the caller did not say -----------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "named"),
    [
        pytest.param(401, b"", {"x-synthetic-quotas": "{}"}, "synthetic", id="synthetic-header"),
        pytest.param(401, b"over your Subscription Rate Limits", {}, "synthetic", id="syn-text"),
        pytest.param(400, {"error": {"code": "1000"}}, {}, "zai", id="zai-1000"),
        pytest.param(400, {"error": {"code": "1999"}}, {}, "zai", id="zai-1999"),
        pytest.param(400, {"error": {"code": "2000"}}, {}, "the provider", id="not-zai-2000"),
        pytest.param(400, {"error": {"code": "999"}}, {}, "the provider", id="not-zai-999"),
        pytest.param(401, b"", {"anthropic-ratelimit-requests-limit": "50"}, "anthropic", id="ant"),
        pytest.param(401, b"", {"X-RateLimit-Limit-Requests": "500"}, "openai", id="openai"),
        pytest.param(401, b"", {"x-request-id": "r1"}, "the provider", id="unknown"),
    ],
)
def test_the_provider_is_guessed_for_messages(
    status: int, body: object, headers: dict[str, str], named: str
) -> None:
    got = run(status, body, headers)
    assert got.message.startswith(f"{got.code} from {named}: "), got.message
    if status == 401 and named != "the provider":
        assert f"the API key in ${named.upper()}_API_KEY was rejected" in got.message


@pytest.mark.parametrize(
    ("finish", "cut"),
    [("length", True), ("stop", False), ("LENGTH", False), (None, False)],
)
def test_an_answer_cut_off_by_max_tokens_is_marked_cut(finish: str | None, cut: bool) -> None:
    """A served answer that `max_tokens` cut off carries `cut`: the reply parser then
    rescues only its complete comments instead of taking the text as a whole review."""
    body = completion('{"comments": [')
    if finish is not None:
        body["choices"][0]["finish_reason"] = finish  # type: ignore[index]
    got = run(200, body)
    assert got.cls is ResponseClass.OK and got.content == '{"comments": ['
    assert got.cut is cut
