"""The layering, seen from a fresh interpreter: what importing a room really loads.

import-linter (`lint-imports` in .ci/run, contracts in pyproject.toml) checks the
import graph statically; these check what Python loads at run time, which is what
a process pays for and what an attacker's payload can reach.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# Worker code, the top layer, and the CLI's libraries.
_NOT_IN_THE_CORE = (
    "workers",
    "scheduler.cli",
    "scheduler.sim",
    "scheduler.bench",
    "scheduler.sandbox",
    "click",
    "rich",
)


def loaded_by(statement: str) -> list[str]:
    """Every module a fresh interpreter has loaded after `statement`."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_webhook_server_loads_no_worker_code() -> None:
    """The internet-facing process never loads the provider client, planning or the
    GitHub client: a flaw there cannot be reached through it."""
    modules = loaded_by("from scheduler.webhook.app import create_app")
    assert "scheduler.webhook.app" in modules
    assert [m for m in modules if _under(m, _NOT_IN_THE_CORE)] == []


@pytest.mark.parametrize(
    "statement",
    [
        "import scheduler.quota.limiter",
        "import scheduler.admission",
        "import scheduler.intake",
        "import scheduler.waker",
        "import scheduler.ops.inspection",
        "import scheduler.config",
    ],
)
def test_the_core_loads_no_worker_code(statement: str) -> None:
    modules = loaded_by(statement)
    assert [m for m in modules if _under(m, _NOT_IN_THE_CORE)] == []


def test_the_quota_room_loads_no_rq() -> None:
    """The limiter knows nothing of RQ, admission or the webhook (rule 2)."""
    modules = loaded_by("import scheduler.quota.limiter, scheduler.quota.circuit")
    banned = ("rq", "scheduler.admission", "scheduler.state", "scheduler.webhook")
    assert [m for m in modules if _under(m, banned)] == []


def test_the_documented_limiter_api_still_imports() -> None:
    """README's `from scheduler.limiter import Limiter` and `from scheduler.plans
    import ...` are re-exported from the quota room."""
    modules = loaded_by(
        "from scheduler.limiter import Limiter\n"
        "from scheduler.plans import Plan, Policy, Window, get_preset"
    )
    assert "scheduler.quota.limiter" in modules and "scheduler.quota.plans" in modules
