"""`redis+sentinel://` URLs: parsed strictly, refused with a named mistake, never printed
with a password. The failover itself is tests/cluster/test_sentinel_url.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.config import ConfigError, load_settings, redact_url
from scheduler.config.redisconn import parse_sentinel_url


def test_a_full_url_is_read_part_by_part() -> None:
    found = parse_sentinel_url(
        "redis+sentinel://worker:s3cret@10.0.0.1:26379,10.0.0.2:26380,sentinel-c/reviewq/2"
        "?sentinel_password=sp"
    )
    assert found.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-c", 26379))
    assert (found.service, found.db) == ("reviewq", 2)
    assert (found.username, found.password, found.sentinel_password) == ("worker", "s3cret", "sp")
    assert "s3cret" not in repr(found) and "sp'" not in repr(found)


def test_the_database_defaults_to_0() -> None:
    found = parse_sentinel_url("redis+sentinel://127.0.0.1:26379/mymaster")
    assert (found.db, found.password, found.sentinel_password) == (0, None, None)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://127.0.0.1:26379", "needs /SERVICE"),
        ("redis+sentinel://127.0.0.1:26379/a/b/c", "needs /SERVICE"),
        ("redis+sentinel://127.0.0.1:26379/svc/x", "must be a number"),
        ("redis+sentinel://127.0.0.1:99999/svc", "is not host:port"),
        ("redis+sentinel://:pw@/svc", "is not host:port"),
        ("redis+sentinel://h:1/svc?sentinel_pasword=x", "unknown parameter 'sentinel_pasword'"),
    ],
)
def test_a_malformed_url_is_a_config_error_naming_the_mistake(
    tmp_path: Path, url: str, says: str
) -> None:
    path = tmp_path / "reviewq.toml"
    path.write_text(f'redis_url = "{url}"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert says in str(caught.value)
    assert "pw" not in str(caught.value).replace("sentinel_pasword", "")


def test_the_password_is_masked_when_printed() -> None:
    url = "redis+sentinel://worker:s3cret@h1:26379,h2:26379/reviewq/0?sentinel_password=sp"
    shown = redact_url(url)
    assert "s3cret" not in shown and "=sp" not in shown
    assert "h1:26379,h2:26379/reviewq/0" in shown
