"""Settings from a TOML file and the environment, with errors a person can act on.

The file is the explicit `path`, else `$REVIEWQ_CONFIG`, else `./reviewq.toml` if it
exists; without one reviewq runs on defaults with no accounts. Environment variables
win over the file: `REDIS_URL` (redis_url) and `REVIEWQ_QUEUE` (queue_name).

API keys never live in the file or in these models: each account names the environment
variable that holds its key, and `api_key` reads it only when a request is about to be
made. Every message here shows secrets through `redact`/`redact_url`, so a key pasted
into the wrong field still does not reach a terminal or a log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import os
import re
import tomllib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from scheduler.config.errors import ConfigError
from scheduler.config.redact import redact, redact_url
from scheduler.config.settings import AccountConfig, Settings
from scheduler.quota.plans import (
    PRESETS,
    Account,
    OffPeakPolicy,
    Plan,
    Policy,
    Window,
    get_preset,
    parse_duration_ms,
)

__all__ = ["DEFAULT_CONFIG", "find_config", "load_settings"]

DEFAULT_CONFIG = Path("reviewq.toml")
_ENV_OVERRIDES = {"REDIS_URL": "redis_url", "REVIEWQ_QUEUE": "queue_name"}
# (provider, plan name or None for any plan) -> (base_url, api_key_env)
_ENDPOINTS: dict[tuple[str, str | None], tuple[str, str]] = {
    ("synthetic", None): ("https://api.synthetic.new/openai/v1", "SYNTHETIC_API_KEY"),
    ("zai", None): ("https://api.z.ai/api/coding/paas/v4", "ZAI_API_KEY"),
    ("zai", "zai-developer"): ("https://api.z.ai/api/paas/v4", "ZAI_API_KEY"),
}
_SECRET_KEY = re.compile(r"key|secret|token|passw|auth", re.IGNORECASE)
# Keys a model accepts besides its fields, offered when a typo is reported.
_ALSO_ACCEPTED: dict[type[BaseModel], tuple[str, ...]] = {Window: ("limit", "duration", "tick")}

Loc = tuple[str | int, ...]
_M = TypeVar("_M", bound=BaseModel)


def find_config(path: Path | None = None, env: Mapping[str, str] = os.environ) -> Path | None:
    """The file `load_settings` reads, or None when it runs on defaults."""
    if path is not None:
        return path
    if env.get("REVIEWQ_CONFIG"):
        return Path(env["REVIEWQ_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: Path | None = None, env: Mapping[str, str] = os.environ) -> Settings:
    """Read, validate and resolve everything at once, so all mistakes show in one run."""
    found = find_config(path, env)
    label = str(found) if found else "defaults"
    raw = _read_toml(found) if found else {}
    origins: dict[str, str] = {}
    for var, field in _ENV_OVERRIDES.items():
        if env.get(var):
            raw[field], origins[field] = env[var], f"environment variable {var}"
    raw_accounts = raw.pop("accounts", [])
    problems: list[tuple[Loc, str]] = []
    try:
        base = _validate(Settings, raw)
    except _Invalid as exc:
        problems, base = exc.problems, Settings()
    accounts = _resolve_accounts(raw_accounts, base.default_policy, label, problems)
    if not problems:  # else indices in duplicate-name errors would not match the file
        try:
            return _validate(Settings, {**raw, "accounts": accounts})
        except _Invalid as exc:
            problems = exc.problems
    lines = [
        f"{origins.get(str(loc[0]), label) if loc else label}: {_path(loc)}: {msg}"
        for loc, msg in problems
    ]
    raise ConfigError("\n".join(lines))


class _Invalid(Exception):
    """Problems found below some location, collected rather than raised one at a time."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        super().__init__(problems)
        self.problems = problems

    def under(self, *prefix: str | int) -> _Invalid:
        return _Invalid([((*prefix, *loc), msg) for loc, msg in self.problems])


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line N, column M)" and never the offending text.
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _resolve_accounts(
    raw: Any, policy: Policy, label: str, problems: list[tuple[Loc, str]]
) -> list[Account]:
    if not isinstance(raw, list):
        problems.append((("accounts",), "expected an array of tables ([[accounts]])"))
        return []
    accounts = []
    for i, item in enumerate(raw):
        try:
            accounts.append(_resolve_account(item, policy, label))
        except _Invalid as exc:
            problems.extend(exc.under("accounts", i).problems)
    return accounts


def _resolve_account(item: Any, default_policy: Policy, label: str) -> Account:
    cfg = _validate(AccountConfig, item)
    plan = _resolve_plan(cfg, label)
    if cfg.provider and cfg.provider != plan.provider:
        msg = f"{cfg.provider!r} does not match plan {plan.name!r} of provider {plan.provider!r}"
        raise _Invalid([(("provider",), msg)])
    with _at("policy"):
        policy = _validate(Policy, {**default_policy.model_dump(), **cfg.policy})
    base_url, key_env = _endpoint(cfg, plan)
    data = {
        "name": cfg.name,
        "provider": plan.provider,
        "base_url": base_url,
        "api_key_env": key_env,
        "plan": plan,
        "packs": cfg.packs,
        "policy": policy,
        "offpeak": _offpeak(cfg, plan),
        "quota_poll_ms": _poll_ms(cfg),
    }
    return _validate(Account, data)


def _offpeak(cfg: AccountConfig, plan: Plan) -> OffPeakPolicy | None:
    if cfg.offpeak is None:
        return None
    if plan.time_factors is None:
        msg = f"plan {plan.name!r} has no time_factors: nothing is cheaper off-peak"
        raise _Invalid([(("offpeak",), msg)])
    with _at("offpeak"):
        return _validate(OffPeakPolicy, cfg.offpeak)


def _poll_ms(cfg: AccountConfig) -> int | None:
    if cfg.quota_poll is None:
        return None
    try:
        return parse_duration_ms(cfg.quota_poll)
    except ValueError as exc:
        raise _Invalid([(("quota_poll",), str(exc))]) from None


def _endpoint(cfg: AccountConfig, plan: Plan) -> tuple[str, str]:
    """The account's own base_url and key variable, else the provider's defaults."""
    defaults = _ENDPOINTS.get((plan.provider, plan.name)) or _ENDPOINTS.get((plan.provider, None))
    if defaults is None:
        known = ", ".join(sorted({provider for provider, _ in _ENDPOINTS}))
        msg = f"required for provider {plan.provider!r} (defaults exist for {known})"
        missing = [k for k in ("base_url", "api_key_env") if getattr(cfg, k) is None]
        if missing:
            raise _Invalid([((k,), msg) for k in missing])
        defaults = ("", "")
    return cfg.base_url or defaults[0], cfg.api_key_env or defaults[1]


def _resolve_plan(cfg: AccountConfig, label: str) -> Plan:
    """Preset or inline plan, then overrides; an overridden preset says so in its source."""
    if isinstance(cfg.plan, str):
        try:
            plan = get_preset(cfg.plan)
        except KeyError:
            msg = f"unknown plan {cfg.plan!r}; known presets: {', '.join(PRESETS)}"
            raise _Invalid([(("plan",), msg)]) from None
        note = f"overridden in {label}"
    else:
        inline = {"name": cfg.name, "source": "config file", "as_of": dt.date.today()}
        if cfg.provider:
            inline["provider"] = cfg.provider
        with _at("plan"):
            plan = _validate(Plan, {**inline, **cfg.plan})
        note = ""
    changes = dict(cfg.plan_overrides)
    if cfg.concurrency is not None:
        changes["concurrency"] = cfg.concurrency
    if not changes:
        return plan
    if note and "source" not in changes:
        changes["source"] = f"{plan.source}; {', '.join(changes)} {note}"
    with _at("plan_overrides"):
        return _validate(Plan, {**plan.model_dump(), **changes})


@contextlib.contextmanager
def _at(*prefix: str | int) -> Iterator[None]:
    """Report problems found inside the block under `prefix` (e.g. `accounts[0].plan`)."""
    try:
        yield
    except _Invalid as exc:
        raise exc.under(*prefix) from None


def _validate(model: type[_M], data: Any) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _Invalid([_describe(model, err) for err in exc.errors()]) from None


def _describe(root: type[BaseModel], err: ErrorDetails) -> tuple[Loc, str]:
    """One pydantic error as (location, what was wrong), with secrets redacted."""
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        return loc, _unknown_key(root, loc)
    if err["type"] == "missing":
        return loc, "required, but missing"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if "got " in msg or not isinstance(value, str | int | float | dt.date):
        return loc, msg  # our own messages quote the input; tables are too long to echo
    return loc, f"{msg}; got {_show(loc, value)}"


def _unknown_key(root: type[BaseModel], loc: Loc) -> str:
    key = str(loc[-1])
    known = _fields_at(root, loc[:-1])
    msg = "unknown key"
    if close := difflib.get_close_matches(key, known, n=1):
        msg += f"; did you mean {close[0]!r}?"
    if known:
        msg += f" (expected one of: {', '.join(known)})"
    if _SECRET_KEY.search(key):
        msg += "; keys never go in the file: name their environment variable in api_key_env"
    return msg


def _fields_at(root: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model found at `loc` below `root` accepts, for did-you-mean hints."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            tp = next(iter(get_args(tp)), None)
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [*tp.model_fields, *_ALSO_ACCEPTED.get(tp, ())]
    return []


def _unwrap(tp: Any) -> Any:
    """`X | None` -> X, so walking a field's type reaches the model inside."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _show(loc: Loc, value: Any) -> str:
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if _SECRET_KEY.search(field):
        return redact(str(value))
    if field.endswith("url") and isinstance(value, str):
        return repr(redact_url(value))
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(top level)"
