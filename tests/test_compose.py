"""compose.yaml against the Compose specification's JSON schema, and its security promises.

No Docker engine or registry is reachable in CI, so `docker compose config` cannot
check the file; the schema can, offline. It comes vendored in check-jsonschema
(`--builtin-schema vendor.compose-spec`), a PyPI package, so the check is real.

The rest reads the file for what a review of its security asked: no secret written
in it, each service given only the secrets it uses, nothing published beyond
loopback by default, every image pinned, and a Redis with no passwordless user. That
the ACL rules really work is tests/test_redis_acl.py, on a real server.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from scheduler.cli.main import main
from scheduler.config import load_settings
from workers.runtime import RuntimeSpec

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
_UNITS = {"h": 3600, "m": 60, "s": 1}


def _seconds(duration: str) -> int:
    """A Compose duration such as `16m` or `1h30m` (the forms this file uses)."""
    total, number = 0, ""
    for char in duration:
        if char.isdigit():
            number += char
        else:
            total, number = total + int(number) * _UNITS[char], ""
    assert not number, f"duration {duration!r} has no unit"
    return total


def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text("utf-8"))
    return schema


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))
    return document


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_schema_rejects_a_misspelt_service_key(compose: dict[str, Any]) -> None:
    """Guards against a validator that passes everything (a wrong draft, say)."""
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["stop_grace"] = broken["services"]["worker"].pop(
        "stop_grace_period"
    )
    assert any("stop_grace" in error for error in schema_errors(broken))


def test_check_jsonschema_cli_agrees() -> None:
    """The same check as a developer would run it from a shell."""
    command = [sys.executable, "-m", "check_jsonschema"]
    command += ["--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _redis_script(compose: dict[str, Any]) -> str:
    command = compose["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-euc"]
    script: str = command[2]
    return script


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    last = _redis_script(compose).strip().splitlines()[-1]
    assert last.startswith("exec docker-entrypoint.sh redis-server --aclfile ")
    assert last.endswith("--appendonly yes --appendfsync everysec")
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-cli --no-auth-warning --user healthcheck ping" in redis["healthcheck"]["test"][1]


def test_workers_wait_for_redis_and_drain_on_stop(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["reviewq", "worker"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    # At least the RQ job timeout (RuntimeSpec.job_timeout_s), so a stop never
    # kills a review call whose quota is already spent.
    assert _seconds(worker["stop_grace_period"]) >= RuntimeSpec.job_timeout_s
    assert worker["deploy"]["replicas"] == 2


def test_web_serves_on_all_interfaces_of_its_container(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    assert web["command"] == ["reviewq", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "healthcheck" in web


def _reviewq_commands(compose: dict[str, Any]) -> list[list[str]]:
    return [
        service["command"]
        for service in compose["services"].values()
        if service.get("command", [None])[0] == "reviewq"
    ]


def test_every_command_compose_runs_exists_in_the_cli(compose: dict[str, Any]) -> None:
    """Parses each command line with the real click group, options included, without
    running it: a renamed command or option breaks this test, not a deployment."""
    commands = _reviewq_commands(compose)
    assert len(commands) >= 2
    for argv in commands:
        group_ctx = click.Context(main, info_name="reviewq")
        command = main.get_command(group_ctx, argv[1])
        assert isinstance(command, click.Command), f"no command {argv[1]!r} for {argv}"
        command.make_context(argv[1], list(argv[2:]), parent=group_ctx)


def test_cli_parse_check_rejects_an_unknown_option() -> None:
    """The check above really parses: a misspelt option fails it."""
    group_ctx = click.Context(main, info_name="reviewq")
    command = main.get_command(group_ctx, "worker")
    assert command is not None
    with pytest.raises(click.NoSuchOption):
        command.make_context("worker", ["--procs", "2"], parent=group_ctx)


def test_the_dashboard_is_optional_and_reads_json(compose: dict[str, Any]) -> None:
    dashboard = compose["services"]["rq-dashboard"]
    assert dashboard["profiles"] == ["dashboard"]
    assert dashboard["environment"]["RQ_DASHBOARD_JSON"] == "true"


def test_services_read_the_mounted_settings_file(compose: dict[str, Any]) -> None:
    for name in ("web", "worker"):
        mounts = compose["services"][name]["volumes"]
        assert "./reviewq.toml:/etc/reviewq/reviewq.toml:ro" in mounts


def test_the_example_settings_file_loads() -> None:
    """The file compose.yaml tells people to copy is valid as shipped."""
    settings = load_settings(ROOT / "reviewq.example.toml", env={})
    assert [a.name for a in settings.accounts] == ["synth", "zai"]
    assert settings.review.sink == "github"


# --- secrets: named, never written, each service only its own -----------------------

# What each service's environment holds: the variables its processes read
# (scheduler/serve_cli.py and scheduler/webhook/app.py for web; scheduler/worker_cli.py,
# workers/runtime.py and scheduler/config.py for worker), and which variables of the
# operator's environment Compose interpolates into it.
SERVICE_ENV = {
    "web": {"REDIS_URL", "GITHUB_WEBHOOK_SECRET", "GITLAB_WEBHOOK_TOKEN"},
    "worker": {"REDIS_URL", "GITHUB_TOKEN", "SYNTHETIC_API_KEY", "ZAI_API_KEY"},
    "rq-dashboard": {"RQ_DASHBOARD_REDIS_URL", "RQ_DASHBOARD_JSON"},
    "redis": set(),
    "prometheus": set(),
    "grafana": {
        "GF_SECURITY_ADMIN_PASSWORD__FILE",
        "GF_USERS_ALLOW_SIGN_UP",
        "GF_AUTH_ANONYMOUS_ENABLED",
    },
}
SERVICE_VARS = {
    "web": {"REVIEWQ_REDIS_WEB_PASSWORD", "GITHUB_WEBHOOK_SECRET", "GITLAB_WEBHOOK_TOKEN"}
    | {"REVIEWQ_BIND"},
    "worker": {"REVIEWQ_REDIS_WORKER_PASSWORD", "GITHUB_TOKEN", "SYNTHETIC_API_KEY"}
    | {"ZAI_API_KEY"},
    "rq-dashboard": {"REVIEWQ_REDIS_DASHBOARD_PASSWORD"},
    "redis": set(),
    "prometheus": set(),
    "grafana": set(),  # its password is a Compose secret, read from a file
}
REQUIRED = {
    "REVIEWQ_REDIS_WEB_PASSWORD",
    "REVIEWQ_REDIS_WORKER_PASSWORD",
    "REVIEWQ_REDIS_DASHBOARD_PASSWORD",
    "GITHUB_WEBHOOK_SECRET",
    "GITHUB_TOKEN",
}
REDIS_USERS = {"web": "web", "worker": "worker", "rq-dashboard": "dashboard"}
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:[?-][^}]*)?\}")


def _references(node: Any) -> set[str]:
    """The variables Compose interpolates into `node` (`$$` is a literal `$`)."""
    text = yaml.safe_dump(node, width=1 << 20).replace("$$", "")
    return {match.group(1) for match in _REFERENCE.finditer(text)}


@pytest.mark.parametrize("service", sorted(SERVICE_ENV))
def test_each_service_gets_only_its_own_secrets(compose: dict[str, Any], service: str) -> None:
    definition = compose["services"][service]
    assert set(definition.get("environment", {})) == SERVICE_ENV[service]
    assert _references(definition) == SERVICE_VARS[service]


def test_the_web_server_never_holds_a_provider_key_or_the_github_token(
    compose: dict[str, Any],
) -> None:
    web = yaml.safe_dump(compose["services"]["web"])
    for name in ("GITHUB_TOKEN", "SYNTHETIC_API_KEY", "ZAI_API_KEY", "WORKER_PASSWORD"):
        assert name not in web
    worker = yaml.safe_dump(compose["services"]["worker"])
    for name in ("WEBHOOK", "WEB_PASSWORD"):
        assert name not in worker


def test_the_names_compose_passes_are_the_ones_the_code_reads(compose: dict[str, Any]) -> None:
    """The example settings (which compose.yaml tells people to copy) name the same
    variables as the services' environments."""
    settings = load_settings(ROOT / "reviewq.example.toml", env={})
    worker = set(compose["services"]["worker"]["environment"])
    assert {a.api_key_env for a in settings.accounts} | {settings.review.github_token_env} <= worker
    web = set(compose["services"]["web"]["environment"])
    assert {settings.webhook.github_secret_env, settings.webhook.gitlab_token_env} <= web


def test_no_secret_value_is_written_in_the_file(compose: dict[str, Any]) -> None:
    """Every value that carries a secret is only a `${VAR...}` reference, and the
    required ones make Compose refuse to start while unset (`:?`)."""
    text = yaml.safe_dump(compose, width=1 << 20).replace("$$", "")  # the file, less its comments
    required = {m.group(1) for m in _REFERENCE.finditer(text) if (m.group(2) or "")[:2] == ":?"}
    assert required == REQUIRED
    for name, definition in compose["services"].items():
        for key, value in definition.get("environment", {}).items():
            if key.endswith("REDIS_URL"):
                found = re.fullmatch(r"redis://([a-z]+):(.+)@redis:6379/0", value)
                assert found is not None, value
                assert found.group(1) == REDIS_USERS[name]
                assert _REFERENCE.fullmatch(found.group(2)), value
            elif key.endswith("__FILE"):  # Grafana reads the secret from a mounted file
                assert value.startswith("/run/secrets/"), (key, value)
            elif re.search(r"SECRET|TOKEN|KEY|PASSWORD", key):
                assert _REFERENCE.fullmatch(value), (key, value)
                assert value.startswith(f"${{{key}:"), (key, value)
    assert compose["secrets"] == {
        **{
            f"redis_{user}_password": {"environment": f"REVIEWQ_REDIS_{user.upper()}_PASSWORD"}
            for user in ("web", "worker", "dashboard")
        },
        "grafana_admin_password": {"environment": "REVIEWQ_GRAFANA_ADMIN_PASSWORD"},
    }


def test_env_files_stay_out_of_git_and_the_image() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


# --- Redis: no passwordless user, each service a user of its own ---------------------


def test_redis_has_no_passwordless_default_user(compose: dict[str, Any]) -> None:
    script = _redis_script(compose)
    assert 'echo "user default off resetpass resetkeys resetchannels -@all" > "$$acl"' in script
    assert "requirepass" not in script and "protected-mode" not in script
    assert "nopass" not in yaml.safe_dump(compose)
    # Each password only as its SHA-256, each secret mounted from the operator's env.
    assert 'echo "user $$name on #$$hash $$rules"' in script
    redis = compose["services"]["redis"]
    assert sorted(redis["secrets"]) == sorted(
        k for k in compose["secrets"] if k.startswith("redis_")
    )
    assert "environment" not in redis and "ports" not in redis


def test_each_service_has_a_user_of_its_own_with_no_admin_rights(
    compose: dict[str, Any],
) -> None:
    content: str = compose["configs"]["redis-acl"]["content"]
    rules = dict(line.split(" ", 1) for line in content.strip().splitlines())
    assert set(rules) == set(REDIS_USERS.values())
    for user, text in rules.items():
        words = text.split()
        assert words.index("-@all") < words.index("-@dangerous") < words.index("+info"), user
        assert "-function" in words and "resetchannels" in words
        assert not {"+@all", "allcommands", "+@admin", "+@dangerous", "nopass"} & set(words)
        assert not [w for w in words if w.startswith((">", "#", "<"))], "no password here"
    for service, user in REDIS_USERS.items():
        (url,) = [v for k, v in compose["services"][service]["environment"].items() if "URL" in k]
        assert url.startswith(f"redis://{user}:")
    assert rules["dashboard"].startswith("~rq:* ")  # RQ's keys only, not reviewq's
    assert "&rq:pubsub:*" in rules["worker"] and "&" not in rules["web"] + rules["dashboard"]
    (mount,) = compose["services"]["redis"]["configs"]
    assert mount == {"source": "redis-acl", "target": "/etc/reviewq/redis-acl.rules"}
    assert f"done < {mount['target']}" in _redis_script(compose)


# --- what is published, and what runs ------------------------------------------------


def test_only_web_and_the_optional_views_publish_ports_and_on_loopback(
    compose: dict[str, Any],
) -> None:
    published = {n: s["ports"] for n, s in compose["services"].items() if "ports" in s}
    assert published == {
        "web": ["${REVIEWQ_BIND:-127.0.0.1}:8000:8000"],
        "rq-dashboard": ["127.0.0.1:9181:9181"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
    }


_EXACT = re.compile(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*:v?\d+\.\d+\.\d+(?:-[a-z0-9.-]+)?")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@pytest.mark.parametrize("service", ["redis", "rq-dashboard", "prometheus", "grafana"])
def test_every_image_is_pinned_to_an_exact_version(compose: dict[str, Any], service: str) -> None:
    image: str = compose["services"][service]["image"]
    name, _, digest = image.partition("@")
    assert _EXACT.fullmatch(name), f"{image}: not an exact x.y.z tag"
    assert not digest or _DIGEST.fullmatch(digest), image
    if service != "rq-dashboard":
        assert digest, f"{service}: the image's digest is known: keep it pinned"


def test_every_service_either_builds_or_names_an_image(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert ("build" in service) != ("image" in service), name


def test_dockerfile_runs_unprivileged_on_a_pinned_python_311() -> None:
    """No Docker engine here to build it; these are the promises compose relies on."""
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    base = instructions[0].removeprefix("FROM ")
    name, _, digest = base.partition("@")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", name), base
    assert _DIGEST.fullmatch(digest), base
    assert any(ln.startswith("RUN pip install -c constraints.txt .") for ln in instructions)
    user = [ln for ln in instructions if ln.startswith("USER ")]
    assert user and user[-1] != "USER root"
    assert "ENV REVIEWQ_CONFIG=/etc/reviewq/reviewq.toml" in instructions
    assert instructions[-1] == 'CMD ["reviewq", "worker"]'
