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
    return {
        "name": f"zai-{tier}",
        "provider": "zai",
        "windows": (
            {"name": "prompts_5h", "limit": five_h, "duration": "5h"},
            {"name": "prompts_week", "limit": week, "duration": "7d"},
        ),
        "concurrency": concurrency,
        "model_costs": _ZAI_COSTS,
        "source": "Z.AI GLM Coding Plan docs, tiers from 12 Feb 2026 (Z.AI marks them estimates)",
        "as_of": dt.date(2026, 2, 12),
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
