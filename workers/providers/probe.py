"""`reviewq accounts test`: each account's key, base URL and model, checked for free.

A wrong key, base URL or model id otherwise shows up only when the first PR's first
message is refused, and a refused key opens the account's circuit. This asks the
provider with calls that cost no quota: `GET {base_url}/models` (free on Synthetic,
synthetic.new/docs/openai/models, read 2026-12-07) and the provider's quota endpoint
(`workers.providers.quota`). What the answers mean:

- 401 or 403: the key is wrong (or not for this endpoint);
- 404 on the model list: the base URL is wrong (it ends in the API's version path);
- a model list without the model reviews use: the model id is wrong;
- no answer at all: the base URL's host cannot be reached.

No chat completion is ever sent, and the key appears in no finding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

from scheduler.config import Settings
from scheduler.quota.plans import Account
from workers.providers.client import JsonFetch, ProviderClient
from workers.providers.quota import quota_endpoint

__all__ = ["AccountReport", "Finding", "probe_account", "probe_accounts"]

Status = Literal["ok", "warn", "fail"]
# Synthetic lists on-demand models only once the key has used them (its /models docs).
_PARTIAL_LISTS = frozenset({"synthetic"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing checked: `check` is what it is about (key, base_url, model, quota)."""

    check: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True)
class AccountReport:
    account: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all(f.status != "fail" for f in self.findings)


def probe_accounts(
    settings: Settings,
    *,
    names: Sequence[str] = (),
    env: Mapping[str, str] = os.environ,
    transport: httpx.BaseTransport | None = None,
) -> list[AccountReport]:
    """Every configured account (or those `names`), in route order."""
    model = settings.review.model_for(settings.accounts)
    chosen = [settings.account(n) for n in names] if names else settings.accounts
    return [probe_account(a, model, env=env, transport=transport) for a in chosen]


def probe_account(
    account: Account,
    model: str,
    *,
    env: Mapping[str, str] = os.environ,
    transport: httpx.BaseTransport | None = None,
) -> AccountReport:
    client = ProviderClient(account, env=env, transport=transport)
    try:
        missing = client.key_missing()
        if missing is not None:
            return AccountReport(account.name, (Finding("key", "fail", missing),))
        listed = _model_list(client, model)
        return AccountReport(account.name, (*listed, *_quota(client)))
    finally:
        client.close()


def _model_list(client: ProviderClient, model: str) -> tuple[Finding, ...]:
    base = client.account.base_url.rstrip("/")
    fetched = client.get_json(f"{base}/models")
    refused = _refused(client, fetched, f"GET {base}/models")
    if refused is not None:
        return refused
    if fetched.status == 404:
        return (
            Finding(
                "base_url",
                "fail",
                f"GET {base}/models answered 404: base_url {base!r} is wrong (it ends in "
                "the API's version path, e.g. /openai/v1 or /api/coding/paas/v4)",
            ),
        )
    if fetched.error is not None:
        return (Finding("base_url", "fail", f"GET {base}/models: {fetched.error}"),)
    ids = _ids(fetched.data)
    if ids is None:
        return (Finding("base_url", "fail", f"GET {base}/models did not answer a model list"),)
    found = [Finding("key", "ok", "accepted"), Finding("base_url", "ok", f"{base} lists models")]
    found.append(_model(client.account.provider, model, ids))
    return tuple(found)


def _model(provider: str, model: str, ids: list[str]) -> Finding:
    if model in ids:
        return Finding("model", "ok", f"{model!r} is offered")
    shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
    what = f"{model!r} is not among the {len(ids)} models listed ({shown}); check [review] model"
    if provider in _PARTIAL_LISTS:
        return Finding("model", "warn", what + " (on-demand models are listed once used)")
    return Finding("model", "fail", what)


def _quota(client: ProviderClient) -> tuple[Finding, ...]:
    endpoint = quota_endpoint(client.account.provider, client.origin)
    if endpoint is None:
        return ()
    url, auth, _ = endpoint
    fetched = client.get_json(url, auth=auth)
    refused = _refused(client, fetched, f"GET {url}")
    if refused is not None:
        return refused
    if fetched.status == 404:
        return (Finding("quota", "fail", f"GET {url} answered 404: is base_url's host right?"),)
    if fetched.error is not None:
        return (Finding("quota", "fail", f"GET {url}: {fetched.error}"),)
    return (Finding("quota", "ok", f"GET {url} answered (it costs no quota)"),)


def _refused(client: ProviderClient, fetched: JsonFetch, what: str) -> tuple[Finding, ...] | None:
    if fetched.status in (401, 403):
        var = client.account.api_key_env
        detail = f"{what} answered {fetched.status}: the API key in {var} was rejected"
        return (Finding("key", "fail", detail),)
    if fetched.status is None and fetched.error is not None:
        return (Finding("base_url", "fail", f"{what}: no answer ({fetched.error})"),)
    return None


def _ids(data: object) -> list[str] | None:
    """OpenAI's `{"data": [{"id": ...}]}`; None if the answer is not that shape."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return [str(i["id"]) for i in items if isinstance(i, dict) and "id" in i]
