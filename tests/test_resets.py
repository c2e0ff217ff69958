"""Reset-time parsing: every source, the UTC+8 trap, and the never-in-the-past rule."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from workers.providers import (
    DEFAULT_MARGIN_MS,
    parse_epoch,
    parse_go_duration_ms,
    parse_iso8601,
    parse_retry_after,
    parse_retry_after_ms,
    parse_zai_message,
    reset_from_response,
    synthetic_limited,
    synthetic_reset,
    zai_quota_reset,
)

# 2026-09-08T20:40:00Z, shortly before the 5-hour reset in the facts file.
NOW = 1_788_900_000_000
# "2026-09-09 05:38:28" Beijing (UTC+8) == 2026-09-08T21:38:28Z. By hand: 20,704 days
# from 1970-01-01 to 2026-09-08 (56 years, 14 leap days, +250 days into 2026) * 86,400
# + 77,908 s (21:38:28) = 1,788,903,508 s.
RESET_0909 = 1_788_903_508_000
# "2026-08-01 10:03:40" Beijing == 2026-08-01T02:03:40Z (the Anthropic-style example).
RESET_0801 = 1_785_549_820_000
EN_1308 = "Usage limit reached for 5 hour. Your limit will reset at 2026-09-09 05:38:28"
ZH_1308 = "您的限额将在 2026-09-09 05:38:28 重置"
BRACKETED_1310 = (
    "[1310][Weekly/Monthly Limit Exhausted. Your limit will reset at 2026-08-01 10:03:40][req-id]"
)


def _utc_ms(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    return int(
        dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp() * 1000
    )


def test_utc8_conversion_matches_hand_computed_epoch() -> None:
    assert _utc_ms(2026, 9, 8, 21, 38, 28) == RESET_0909
    assert parse_zai_message(EN_1308) == RESET_0909
    # Read as UTC it would be 8 h late; read as local time it would depend on the host.
    assert parse_zai_message(EN_1308) != _utc_ms(2026, 9, 9, 5, 38, 28)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(EN_1308, RESET_0909, id="english"),
        pytest.param(ZH_1308, RESET_0909, id="chinese"),
        pytest.param(BRACKETED_1310, RESET_0801, id="anthropic-bracketed"),
        pytest.param("Your limit will reset at 2026-13-40 10:00:00", None, id="impossible-date"),
        pytest.param("Usage limit reached for 5 hour.", None, id="no-time"),
        pytest.param("at 2026-09-09 05:38:28", None, id="time-without-reset-phrase"),
    ],
)
def test_parse_zai_message(text: str, expected: int | None) -> None:
    assert parse_zai_message(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2026-09-08T21:38:28Z", RESET_0909, id="zulu"),
        pytest.param("2026-09-09T05:38:28+08:00", RESET_0909, id="plus-8"),
        pytest.param("2026-09-08T21:38:28.000Z", RESET_0909, id="fraction-zulu"),
        pytest.param("2026-09-08T16:38:28.0004-05:00", RESET_0909, id="fraction-minus-5"),
        pytest.param("2026-09-08T21:38:28", None, id="naive-refused"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(1788903508000, None, id="not-a-string"),
    ],
)
def test_parse_iso8601(value: object, expected: int | None) -> None:
    assert parse_iso8601(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("6m0s", 360_000, id="6m0s"),
        pytest.param("1s", 1_000, id="1s"),
        pytest.param("20ms", 20, id="20ms"),
        pytest.param("1h2m3.5s", 3_723_500, id="1h2m3.5s"),
        pytest.param("0.5ms", 1, id="rounds-up"),
        pytest.param("6 minutes", None, id="words"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_go_duration_ms(value: str, expected: int | None) -> None:
    assert parse_go_duration_ms(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", NOW + 120_000, id="delta-seconds"),
        pytest.param("1.5", NOW + 1_500, id="fractional-delta"),
        pytest.param("Tue, 08 Sep 2026 21:38:28 GMT", RESET_0909, id="http-date"),
        pytest.param("tomorrow", None, id="garbage"),
    ],
)
def test_parse_retry_after(value: str, expected: int | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_ms() -> None:
    assert parse_retry_after_ms("1500", NOW) == NOW + 1_500
    assert parse_retry_after_ms("later", NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(RESET_0909, RESET_0909, id="epoch-ms"),
        pytest.param(str(RESET_0909), RESET_0909, id="epoch-ms-string"),
        pytest.param(RESET_0909 // 1000, RESET_0909, id="epoch-seconds"),
        pytest.param(True, None, id="bool"),
        pytest.param(-5, None, id="negative"),
        pytest.param("soon", None, id="garbage"),
    ],
)
def test_parse_epoch(value: object, expected: int | None) -> None:
    assert parse_epoch(value) == expected


TICK = "2026-09-08T20:55:00Z"
QUOTAS = {
    "subscription": {"limit": 500, "requests": 500, "renewsAt": "2026-09-09T01:00:00Z"},
    "rollingFiveHourLimit": {"remaining": 0, "max": 500, "limited": True, "nextTickAt": TICK},
    "weeklyTokenLimit": {"maxCredits": "$24.00", "nextRegenAt": "2026-09-08T23:00:00+00:00"},
}


def test_synthetic_reset_fields() -> None:
    assert synthetic_reset(json.dumps(QUOTAS)) == parse_iso8601(TICK)
    legacy = {"subscription": QUOTAS["subscription"]}
    assert synthetic_reset(legacy) == _utc_ms(2026, 9, 9, 1, 0, 0)
    assert synthetic_reset(QUOTAS, credits=True) == _utc_ms(2026, 9, 8, 23, 0, 0)
    assert synthetic_reset("{not json") is None
    assert synthetic_limited(json.dumps(QUOTAS)) is True
    assert synthetic_limited(None) is False


def _zai_quota(*limits: dict[str, object]) -> dict[str, object]:
    return {"code": 200, "data": {"limits": list(limits), "level": "lite"}, "success": True}


def test_zai_quota_reset_uses_exhausted_gating_windows_only() -> None:
    five_h = {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "nextResetTime": RESET_0909}
    week = {"type": "TOKENS_LIMIT", "unit": 6, "number": 1, "nextResetTime": RESET_0909 + 9}
    mcp = {"type": "TIME_LIMIT", "unit": 5, "percentage": 100, "nextResetTime": RESET_0909 + 99}
    assert zai_quota_reset(_zai_quota({**five_h, "percentage": 100}, mcp)) == RESET_0909
    both = _zai_quota({**five_h, "percentage": 100}, {**week, "percentage": 100})
    assert zai_quota_reset(both) == RESET_0909 + 9
    assert zai_quota_reset(_zai_quota({**five_h, "percentage": 40}, mcp)) is None
    assert zai_quota_reset(_zai_quota({"type": "TOKENS_LIMIT"})) is None  # drifted shape
    assert zai_quota_reset({"data": None}) is None


def _zai_body(message: str) -> dict[str, object]:
    return {"error": {"code": "1308", "message": message}}


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        pytest.param(429, {}, _zai_body(EN_1308), RESET_0909, id="zai-json-no-headers"),
        pytest.param(429, {}, json.dumps(_zai_body(ZH_1308)).encode(), RESET_0909, id="bytes"),
        pytest.param(429, {}, BRACKETED_1310, None, id="past-text-ignored"),
        pytest.param(503, {"Retry-After": "30"}, "", NOW + 30_000, id="retry-after-delta"),
        pytest.param(503, {"retry-after-ms": "1500", "retry-after": "2"}, "", NOW + 1_500, id="ms"),
        pytest.param(
            429, {"Retry-After": "Tue, 08 Sep 2026 21:38:28 GMT"}, "", RESET_0909, id="http-date"
        ),
        pytest.param(
            429,
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"},
            "",
            NOW + 360_000,
            id="openai-requests",
        ),
        pytest.param(
            429,
            {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"},
            "",
            NOW + 20,
            id="openai-tokens",
        ),
        pytest.param(
            429,
            {"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "6m0s"},
            "",
            None,
            id="openai-bucket-not-empty",
        ),
        pytest.param(
            200, {"x-ratelimit-reset-requests": "6m0s"}, "", None, id="openai-on-200-ignored"
        ),
        pytest.param(
            429,
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2026-09-08T21:38:28Z",
            },
            "",
            RESET_0909,
            id="anthropic-rfc3339",
        ),
        pytest.param(
            429, {"x-synthetic-quotas": json.dumps(QUOTAS)}, "", parse_iso8601(TICK), id="syn-429"
        ),
        pytest.param(
            402,
            {"x-synthetic-quotas": json.dumps(QUOTAS)},
            "Insufficient quota and token balance",
            _utc_ms(2026, 9, 8, 23, 0, 0),
            id="syn-402-credits",
        ),
        pytest.param(500, {"x-synthetic-quotas": json.dumps(QUOTAS)}, "", None, id="syn-on-500"),
        pytest.param(
            200,
            {},
            _zai_quota({"type": "TOKENS_LIMIT", "percentage": 100, "nextResetTime": RESET_0909}),
            RESET_0909,
            id="zai-quota-endpoint",
        ),
        pytest.param(429, {"Retry-After": "soon"}, "{broken", None, id="malformed"),
        pytest.param(429, {"Retry-After": str(400 * 86_400)}, "", None, id="beyond-horizon"),
    ],
)
def test_reset_from_response_sources(
    status: int, headers: dict[str, str], body: object, expected: int | None
) -> None:
    got = reset_from_response(status, headers, body, NOW)
    assert got == (None if expected is None else expected + DEFAULT_MARGIN_MS)


def test_latest_source_wins() -> None:
    headers = {"Retry-After": "60"}
    assert reset_from_response(429, headers, _zai_body(EN_1308), NOW) == RESET_0909 + 2_000
    late = {"Retry-After": str(4 * 3600)}
    assert reset_from_response(429, late, _zai_body(EN_1308), NOW) == NOW + 4 * 3_600_000 + 2_000


def test_past_values_are_skipped_not_returned() -> None:
    past_text = _zai_body("Your limit will reset at 2026-01-01 00:00:00")
    assert reset_from_response(429, {"Retry-After": "5"}, past_text, NOW) == NOW + 7_000
    assert reset_from_response(429, {"Retry-After": "0"}, past_text, NOW) is None
    # A reset a moment ago is past even though adding the margin would make it future.
    just_gone = _zai_body("Your limit will reset at 2026-09-09 04:39:59")
    assert reset_from_response(429, {}, just_gone, NOW) is None


def test_margin_is_configurable() -> None:
    body = _zai_body(EN_1308)
    assert reset_from_response(429, {}, body, NOW, margin_ms=0) == RESET_0909
    assert reset_from_response(429, {}, body, NOW, margin_ms=10_000) == RESET_0909 + 10_000


# ------------------------------------------------ the parsing rules, at their edges


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (0, None),  # not a time
        (-5, None),
        (0.5, 500),  # seconds, however small
        (1, 1000),
        (99_999_999_999, 99_999_999_999_000),  # below 1e11: seconds
        (100_000_000_000, 100_000_000_000),  # from 1e11: milliseconds
        ("1788903508", RESET_0909),
        (True, None),
    ],
)
def test_parse_epoch_edges(value: object, want: int | None) -> None:
    assert parse_epoch(value) == want


def test_retry_after_http_date_is_gmt_even_when_it_says_minus_zero() -> None:
    # RFC 9110's example form with "-0000", which parses to a naive time
    got = parse_retry_after("Tue, 08 Sep 2026 20:40:10 -0000", NOW)
    assert got == NOW + 10_000


@pytest.mark.parametrize(("remaining", "counts"), [("0", True), ("0.0", True), ("1", False)])
def test_a_bucket_reset_counts_only_when_the_bucket_is_empty(remaining: str, counts: bool) -> None:
    headers = {"x-ratelimit-reset-requests": "30s", "x-ratelimit-remaining-requests": remaining}
    got = reset_from_response(429, headers, b"", NOW, margin_ms=0)
    assert got == (NOW + 30_000 if counts else None)


@pytest.mark.parametrize(("remaining", "counts"), [("0", True), ("1", False), (None, True)])
def test_an_anthropic_reset_counts_only_when_its_bucket_is_empty(
    remaining: str | None, counts: bool
) -> None:
    headers = {"anthropic-ratelimit-requests-reset": "2026-09-08T20:41:00Z"}
    if remaining is not None:
        headers["anthropic-ratelimit-requests-remaining"] = remaining
    got = reset_from_response(429, headers, b"", NOW, margin_ms=0)
    assert got == (NOW + 60_000 if counts else None)


def test_the_horizon_is_inclusive() -> None:
    headers = {"retry-after": "60"}
    assert reset_from_response(429, headers, b"", NOW, margin_ms=0, max_horizon_ms=60_000) == (
        NOW + 60_000
    )
    assert reset_from_response(429, headers, b"", NOW, margin_ms=0, max_horizon_ms=59_999) is None


def test_a_body_that_is_not_utf8_is_still_read() -> None:
    body = b"\xff\xfe usage limit reached, reset at 2026-09-09 05:38:28 \xff"
    got = reset_from_response(429, {}, body, NOW, margin_ms=0)
    assert got == RESET_0909
