"""Config loading: good files resolve fully, bad ones say where and what, secrets never leak."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from scheduler.config import (
    ConfigError,
    Settings,
    api_key,
    find_config,
    load_settings,
    redact,
    redact_url,
)
from scheduler.quota.plans import PRESETS, Policy, get_preset

SECRET = "sk-live-9f8e7d6c5b4a39281706"

GOOD = """
    redis_url = "redis://file-host:6379/2"
    queue_name = "reviews"

    [default_policy]
    headroom = 0.05

    [[accounts]]
    name = "synth"
    plan = "synthetic"
    packs = 2
    concurrency = 3
    [accounts.policy]
    pr_share = 0.2
    reserve = 0.3

    [[accounts]]
    name = "zai-dev"
    plan = "zai-developer"

    [[accounts]]
    name = "zai"
    plan = "zai-max"
    api_key_env = "ZAI_WORK_KEY"
    [accounts.plan_overrides]
    windows = [{name = "prompts_5h", limit = 2400, duration = "5h"}]

    [[accounts]]
    name = "openai"
    provider = "openai"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"
    [[accounts.plan.windows]]
    name = "rpm"
    limit = 500
    duration = "1m"
    [[accounts.plan.windows]]
    name = "credits"
    limit = 0.5
    duration = "5h"
    kind = "regenerating"
    tick = "15m"
    tick_percent = 5
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths keep messages short, and a stray ./reviewq.toml cannot leak in."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "reviewq.toml") -> Path:
    (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return Path(name)


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return str(info.value)


def test_good_file_resolves_every_account(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), env={})
    assert settings.redis_url == "redis://file-host:6379/2"
    assert settings.queue_name == "reviews"
    assert [a.name for a in settings.accounts] == ["synth", "zai-dev", "zai", "openai"]

    synth = settings.account("synth")
    assert synth.provider == "synthetic"
    assert synth.base_url == "https://api.synthetic.new/openai/v1"
    assert synth.api_key_env == "SYNTHETIC_API_KEY"
    assert synth.policy == Policy(headroom=0.05, pr_share=0.2, reserve=0.3)
    assert synth.plan.concurrency == 3  # per pack, so packs still multiply it
    assert synth.effective_plan.concurrency == 6
    assert synth.effective_plan.windows[0].limit_milli == 1_000_000
    assert "concurrency overridden in" in synth.plan.source

    dev = settings.account("zai-dev")
    assert (dev.provider, dev.base_url) == ("zai", "https://api.z.ai/api/paas/v4")
    assert dev.api_key_env == "ZAI_API_KEY"
    assert dev.policy == Policy(headroom=0.05)
    assert dev.plan == get_preset("zai-developer")


def test_overrides_and_inline_plans(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), env={})
    zai = settings.account("zai")
    assert zai.base_url == "https://api.z.ai/api/coding/paas/v4"
    assert zai.api_key_env == "ZAI_WORK_KEY"
    assert [(w.name, w.limit_milli) for w in zai.plan.windows] == [("prompts_5h", 2_400_000)]
    assert zai.plan.concurrency == get_preset("zai-max").concurrency
    assert zai.plan.source.startswith(get_preset("zai-max").source)
    assert "windows overridden in" in zai.plan.source

    inline = settings.account("openai").plan
    assert (inline.provider, inline.source, inline.as_of) == (
        "openai",
        "config file",
        dt.date.today(),
    )
    assert inline.windows[1].limit_milli == 500
    assert inline.windows[1].tick_ms == 15 * 60_000


def test_no_file_means_defaults() -> None:
    assert find_config(env={}) is None
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.queue_name == "reviewq"
    assert settings.accounts == []


def test_file_lookup_order(tmp_path: Path) -> None:
    local = write(tmp_path, 'queue_name = "local"')
    from_env = write(tmp_path, 'queue_name = "env"', "other.toml")
    explicit = write(tmp_path, 'queue_name = "explicit"', "explicit.toml")
    env = {"REVIEWQ_CONFIG": str(from_env)}
    assert load_settings(env={}).queue_name == "local"
    assert find_config(env={}) == local
    assert load_settings(env=env).queue_name == "env"
    assert load_settings(explicit, env=env).queue_name == "explicit"


def test_env_overrides_the_file(tmp_path: Path) -> None:
    env = {"REDIS_URL": "redis://env-host:6380/0", "REVIEWQ_QUEUE": "from-env"}
    settings = load_settings(write(tmp_path, GOOD), env=env)
    assert settings.redis_url == "redis://env-host:6380/0"
    assert settings.queue_name == "from-env"
    # An empty variable counts as unset.
    assert load_settings(write(tmp_path, GOOD), env={"REDIS_URL": ""}).redis_url.startswith(
        "redis://file-host"
    )


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    message = error_of(tmp_path, "", env={"REDIS_URL": "http://localhost"})
    assert message.startswith("environment variable REDIS_URL: redis_url:")
    assert "'http://localhost'" in message


def test_unknown_plan_names_file_field_and_presets(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        """
        [[accounts]]
        name = "a"
        plan = "synthetic"
        [[accounts]]
        name = "b"
        plan = "zai-ultra"
        """,
    )
    assert message.startswith("reviewq.toml: accounts[1].plan: unknown plan 'zai-ultra'")
    assert f"known presets: {', '.join(PRESETS)}" in message


def test_bad_type_says_what_was_given(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[[accounts]]\nname = "a"\nplan = "synthetic"\npacks = "two"\n')
    assert message.startswith("reviewq.toml: accounts[0].packs: Input should be a valid integer")
    assert "got 'two'" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('queu_name = "x"', "queu_name: unknown key; did you mean 'queue_name'?"),
        (
            '[[accounts]]\nname = "a"\nplan = "synthetic"\npakcs = 2\n',
            "accounts[0].pakcs: unknown key; did you mean 'packs'?",
        ),
        (
            '[[accounts]]\nname = "a"\nplan = "synthetic"\n[accounts.policy]\npr_shar = 0.2\n',
            "accounts[0].policy.pr_shar: unknown key; did you mean 'pr_share'?",
        ),
        (
            '[[accounts]]\nname = "a"\nprovider = "x"\nbase_url = "u"\napi_key_env = "K"\n'
            '[accounts.plan]\nwindows = [{name = "w", limt = 5, duration = "5h"}]\n',
            "accounts[0].plan.windows[0].limt: unknown key; did you mean 'limit'?",
        ),
    ],
)
def test_unknown_keys_are_typos(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("accounts = 3", "accounts: expected an array of tables"),
        ('[[accounts]]\nname = "a"\n', "accounts[0].plan: required, but missing"),
        ('[[accounts]]\nname = "a"\nplan = 5\n', "accounts[0].plan: expected a preset name"),
        (
            '[[accounts]]\nname = "a"\nplan = "zai-lite"\nprovider = "synthetic"\n',
            "accounts[0].provider: 'synthetic' does not match plan 'zai-lite'",
        ),
        (
            '[[accounts]]\nname = "a"\nprovider = "openai"\n[accounts.plan]\nwindows = []\n',
            "accounts[0].base_url: required for provider 'openai'",
        ),
        (
            '[[accounts]]\nname = "a"\nplan = "synthetic"\n[accounts.plan_overrides]\n'
            'windows = [{name = "w", limit = 5, duration = "5 hours"}]\n',
            "accounts[0].plan_overrides.windows[0]: 'duration': expected a duration",
        ),
        (
            "[default_policy]\nheadroom = 0.6\nreserve = 0.5\n",
            "default_policy: headroom (0.6) + reserve (0.5) must stay below 1",
        ),
        (
            '[[accounts]]\nname = "a"\nplan = "synthetic"\n[accounts.policy]\nheadroom = 1.5\n',
            "accounts[0].policy.headroom: Input should be less than 1; got 1.5",
        ),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    assert f"reviewq.toml: {expected}" in error_of(tmp_path, text)


def test_all_errors_one_per_line(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        """
        queu_name = "x"
        [[accounts]]
        name = "a"
        plan = "nope"
        [[accounts]]
        name = "b"
        plan = "synthetic"
        packs = 0
        """,
    )
    lines = message.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("reviewq.toml: ") for line in lines)


def test_duplicate_account_names(tmp_path: Path) -> None:
    text = """
        [[accounts]]
        name = "a"
        plan = "synthetic"
        [[accounts]]
        name = "b"
        plan = "zai-lite"
        [[accounts]]
        name = "a"
        plan = "zai-pro"
    """
    message = error_of(tmp_path, text)
    assert message == (
        "reviewq.toml: accounts: duplicate account name 'a' (accounts[0] and accounts[2])"
    )


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'queue_name = "ok"\n[[accounts]]\nname = "unterminated\n')
    assert message.startswith("reviewq.toml: invalid TOML:")
    assert "line 3" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_settings(tmp_path / "nope.toml", env={})


def test_api_key_error_names_the_variable_never_a_value(tmp_path: Path) -> None:
    synth = load_settings(write(tmp_path, GOOD), env={}).account("synth")
    assert api_key(synth, {"SYNTHETIC_API_KEY": f"  {SECRET}\n"}) == SECRET
    for env in ({}, {"SYNTHETIC_API_KEY": ""}, {"OTHER": SECRET}):
        with pytest.raises(ConfigError) as info:
            api_key(synth, env)
        assert "SYNTHETIC_API_KEY is not set" in str(info.value)
        assert "'synth'" in str(info.value)
        assert SECRET not in str(info.value)


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    env = {"SYNTHETIC_API_KEY": SECRET, "REDIS_URL": f"http://:{SECRET}@host:6379"}
    message = error_of(
        tmp_path,
        f"""
        [[accounts]]
        name = "a"
        plan = "synthetic"
        api_key = "{SECRET}"
        [[accounts]]
        name = "b"
        plan = "synthetic"
        api_key_env = "{SECRET}"
        [[accounts]]
        name = "c"
        plan = "synthetic"
        token = "{SECRET}"
        """,
        env=env,
    )
    assert SECRET not in message
    assert "accounts[0].api_key: unknown key; did you mean 'api_key_env'?" in message
    assert "accounts[1].api_key_env:" in message
    assert "got ****1706" in message
    assert "redis_url:" in message and "http://:****@host:6379" in message


def test_account_lookup_lists_known_names(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), env={})
    with pytest.raises(KeyError) as info:
        settings.account("nope")
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == "unknown account 'nope'; accounts: synth, zai-dev, zai, openai"


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        (None, "<unset>"),
        ("", "<unset>"),
        ("short", "****"),
        ("elevenchars", "****"),
        (SECRET, "****1706"),
    ],
)
def test_redact(secret: str | None, shown: str) -> None:
    assert redact(secret) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw123@host:6379/0", "redis://:****@host:6379/0"),
        ("rediss://user:pw123@host/1", "rediss://user:****@host/1"),
        ("redis://[::1", "****"),
        # redis-py also authenticates with `password` from the query string.
        ("redis://host:6379/0?password=pw123", "redis://host:6379/0?password=****"),
        (
            "rediss://host/0?ssl_cert_reqs=none&password=pw123",
            "rediss://host/0?ssl_cert_reqs=none&password=****",
        ),
        ("unix:///run/redis.sock?password=pw123&db=2", "unix:///run/redis.sock?password=****&db=2"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("redis://u:pw1@host/0?password=pw2", "redis://u:****@host/0?password=****"),
        (
            "redis://host/0?PASSWORD=pw123&ssl_password=kp",
            "redis://host/0?PASSWORD=****&ssl_password=****",
        ),
        ("redis://host/0?db=1&username=bob", "redis://host/0?db=1&username=bob"),
        # URL-encoded, and an unencoded & in a password, which redis-py cuts short.
        ("redis://:p%40ss%3Aw@host/0", "redis://:****@host/0"),
        ("redis://host/0?password=p%40ss%26w", "redis://host/0?password=****"),
        ("redis://host/0?password=pw&123&db=1", "redis://host/0?password=****&db=1"),
        # Malformed: an unencoded ? or # in a password moves its tail past the userinfo.
        ("redis://:pw?123@host/0", "redis://****"),
        ("redis://:pw#123@host/0", "redis://****"),
        ("redis://host/0?password=pw#123", "redis://host/0?password=****"),
        ("redis://host:port/0", "redis://host:port/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cr3t@h/0?password=s3cr3t",
        "unix:///s.sock?password=s3cr3t",
        "redis://:s3c?r3t@h",
        "redis://h/0?password=s3c&r3t",
        "redis://h/0?db=0&password=s3cr3t#x",
    ],
)
def test_no_part_of_the_password_survives_redaction(url: str) -> None:
    shown = redact_url(url)
    assert "s3c" not in shown and "r3t" not in shown, shown
