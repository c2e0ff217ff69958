"""The dated presets: what each provider sold, as of when, and where that was read.

Both providers changed their metering several times in 2026, so this is the file that
moves: each preset is plain data in the vocabulary of a config file's inline plan
(`limit` in units, `duration` and `tick` as "5h"), with its source and date, and
`plans.py` validates it into a `Plan` like any user's plan. Nothing here is imported by
the limiter's logic; users override any field in config, and `reviewq plans` shows
where each figure came from.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

__all__ = ["PRESET_DATA"]

_SYNTHETIC_SOURCE = "Synthetic pricing page and provider guides (500 messages per rolling 5 h)"
_SYNTHETIC_COSTS = ({"pattern": "*flash*", "weight": 0.1},)
_SYNTHETIC_WEEKLY_CREDITS = {
    "name": "weekly_credits",
    "unit": "usd",
    "limit": 24,
    "duration": "7d",
    "kind": "regenerating",
    "tick": "202m",
    "tick_percent": 2.0,
}
_ZAI_COSTS = ({"pattern": "glm-5*", "weight": 2.0, "peak_weight": 3.0},)


def _synthetic_requests(kind: Literal["rolling", "regenerating"]) -> dict[str, Any]:
    window: dict[str, Any] = {"name": "requests_5h", "limit": 500, "duration": "5h"}
    if kind == "regenerating":  # 5 % every 15 min refills an empty bucket in 20 ticks = 5 h
        window |= {"kind": "regenerating", "tick": "15m", "tick_percent": 5.0}
    return window


def _synthetic(name: str, *windows: dict[str, Any], **dated: Any) -> dict[str, Any]:
    """Synthetic's plans share their provider, their per-model concurrency of 1 per pack
    and their model weights; `dated` holds the source, date and notes."""
    return {
        "name": name,
        "provider": "synthetic",
        "windows": windows,
        "concurrency": 1,
        "concurrency_per_model": True,
        "model_costs": _SYNTHETIC_COSTS,
        **dated,
    }


def _zai(tier: str, five_h: int, week: int, concurrency: int | None, notes: str) -> dict[str, Any]:
    """V2, counted in prompts: no longer sold since V3's launch; existing subscribers
    keep it until their subscription ends."""
    return {
        "name": f"zai-{tier}",
        "provider": "zai",
        "windows": (
            {"name": "prompts_5h", "limit": five_h, "duration": "5h"},
            {"name": "prompts_week", "limit": week, "duration": "7d"},
        ),
        "concurrency": concurrency,
        "model_costs": _ZAI_COSTS,
        "on_sale": False,
        "source": "Z.AI GLM Coding Plan docs, tiers from 12 Feb 2026 (Z.AI marks them estimates)",
        "as_of": dt.date(2026, 2, 12),
        "notes": f"{notes}; V2 (prompts): not sold since 2026-07-30, new keys are zai-{tier}-v3",
    }


# Z.AI GLM Coding Plan V3 (launched 2026-07-30): credits from tokens. Multipliers per
# 10,000 tokens (input / cached input / output, reasoning billed as output), as
# reported; GLM-5.2 and 5.1 are billed as 5.3. Collected 2026-12-07.
_V3_SOURCE = (
    "Z.AI GLM Coding Plan V3 (launched 2026-07-30), as collected 2026-12-07 in "
    "provider-facts.md 'Changes since July 2026'; confirm on z.ai/subscribe"
)
_V3_AS_OF = dt.date(2026, 12, 7)
_GLM_53 = {"input": 6.9, "cached_input": 1.7, "output": 24}
_ZAI_V3_PRICES = (
    {"pattern": "glm-5.3", **_GLM_53},
    {"pattern": "glm-5.2", **_GLM_53},
    {"pattern": "glm-5.1", **_GLM_53},
    {"pattern": "glm-5-turbo", "input": 5.7, "cached_input": 1.5, "output": 21},
    {"pattern": "glm-4.7", "input": 4.6, "cached_input": 1.2, "output": 16},
)
# Peak Monday-Friday 14:00-18:00 UTC+8 at 1x, off-peak 0.5x (one report says 2x and
# 0.67x: both factors are config fields).
_ZAI_V3_TIME = {
    "peak_days": (0, 1, 2, 3, 4),
    "peak_start": "14:00",
    "peak_end": "18:00",
    "utc_offset_hours": 8,
    "peak_factor": 1.0,
    "off_peak_factor": 0.5,
    "source": "provider-facts.md 'Changes since July 2026': factor at the request's arrival",
    "as_of": _V3_AS_OF,
}


def _zai_v3(tier: str, five_h: int, week: int, concurrency: int, notes: str) -> dict[str, Any]:
    return {
        "name": f"zai-{tier}-v3",
        "provider": "zai",
        "windows": (
            {"name": "credits_5h", "limit": five_h, "duration": "5h", "unit": "credits"},
            {"name": "credits_week", "limit": week, "duration": "7d", "unit": "credits"},
        ),
        "concurrency": concurrency,
        "prices": _ZAI_V3_PRICES,
        "time_factors": _ZAI_V3_TIME,
        "default_model": "glm-5.1",
        "source": _V3_SOURCE,
        "as_of": _V3_AS_OF,
        "notes": notes,
    }


PRESET_DATA: tuple[dict[str, Any], ...] = (
    _synthetic(
        "synthetic",
        _synthetic_requests("rolling"),
        source=_SYNTHETIC_SOURCE,
        as_of=dt.date(2026, 1, 15),
        notes="1 request in flight per model per pack; packs stack",
    ),
    _synthetic(
        "synthetic-credits",
        _synthetic_requests("rolling"),
        _SYNTHETIC_WEEKLY_CREDITS,
        source=_SYNTHETIC_SOURCE + "; weekly credits from /v2/quotas weeklyTokenLimit",
        as_of=dt.date(2026, 6, 1),
        notes="synthetic plus ~$24/week of token credits regenerating 2 % per 202 min",
    ),
    _synthetic(
        "synthetic-v3",
        _synthetic_requests("regenerating"),
        source="Synthetic docs: rolling quota regenerates 5 % (25 requests) every 15 min",
        as_of=dt.date(2026, 6, 1),
        notes="regenerating variant of the 500 / 5 h quota",
    ),
    _zai("lite", 80, 400, 1, "~1 concurrent"),
    _zai("pro", 400, 2000, 1, "~1 concurrent"),
    _zai("max", 1600, 8000, 5, "docs allow up to 30 concurrent; start at 5 and raise"),
    _zai_v3("lite", 2000, 10_000, 1, "credits; 1 in flight at peak (more off-peak)"),
    _zai_v3("pro", 12_000, 60_000, 1, "credits; 1 in flight at peak (more off-peak)"),
    _zai_v3("max", 28_000, 140_000, 5, "credits; concurrency dynamic, start at 5"),
    {
        "name": "zai-developer",
        "provider": "zai",
        "windows": (),
        "concurrency": None,
        "source": "Z.AI Developer API (pay per token): no window; concurrency tuned by the user",
        "as_of": dt.date(2026, 2, 12),
        "notes": "set 'concurrency' in config; start uncapped and drop to 5 on rate-limit errors",
    },
)
