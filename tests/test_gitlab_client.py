"""The GitLab client, request by request, against `httpx.MockTransport`: what it sends
(the token header, nested groups encoded as one segment, paging), and how each kind
of failure comes back (typed, dated, never with the token in it, never retried)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from workers.forge.gitlab import (
    GitLabAuthError,
    GitLabBadRequest,
    GitLabClient,
    GitLabDiff,
    GitLabNotFound,
    GitLabRateLimited,
    GitLabServerError,
    GitLabTransportError,
)
from workers.forge.gitlab_diffs import TOO_LARGE, to_changed_file

TOKEN = "glpat-SECRETsecretSECRET0123"
NOW_MS = 1_700_000_000_000
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kw: object) -> tuple[GitLabClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    made = GitLabClient(
        TOKEN,
        base_url="https://git.example.com/gitlab",
        transport=httpx.MockTransport(record),
        clock_ms=lambda: NOW_MS,
        **kw,  # type: ignore[arg-type]
    )
    return made, seen


MR = {"iid": 12, "state": "opened", "sha": "abc1234", "draft": False, "work_in_progress": False}


def test_the_token_goes_in_private_token_or_as_a_bearer_and_nested_groups_are_one_segment() -> None:
    c, seen = client(lambda r: httpx.Response(200, json=MR))
    assert c.merge_request("group/sub/project", 12).sha == "abc1234"
    bearer, seen_b = client(lambda r: httpx.Response(200, json=MR), auth="bearer")
    bearer.merge_request("group/sub/project", 12)
    (request,), (request_b,) = seen, seen_b
    assert request.headers["PRIVATE-TOKEN"] == TOKEN and "authorization" not in request.headers
    assert request_b.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "private-token" not in request_b.headers
    assert (
        request.url.raw_path == b"/gitlab/api/v4/projects/group%2Fsub%2Fproject/merge_requests/12"
    )
    assert TOKEN not in repr(c)


def test_diffs_follow_x_next_page_until_it_is_empty() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        items = [{"old_path": f"f{page}", "new_path": f"f{page}", "diff": "@@ -1 +1 @@\n-a\n+b"}]
        return httpx.Response(
            200, json=items, headers={"X-Next-Page": "" if page == 3 else str(page + 1)}
        )

    c, seen = client(handler)
    listing = c.list_diffs("g/p", 1)
    assert [d.new_path for d in listing.diffs] == ["f1", "f2", "f3"] and not listing.truncated
    assert [r.url.params["per_page"] for r in seen] == ["100"] * 3
    capped = client(handler)[0].list_diffs("g/p", 1, max_files=2)
    assert len(capped.diffs) == 2 and capped.truncated


def test_a_next_page_link_to_another_host_is_not_followed() -> None:
    link = '<https://evil.example.net/api/v4/x?page=2>; rel="next"'
    c, seen = client(lambda r: httpx.Response(200, json=[], headers={"Link": link}))
    with pytest.raises(GitLabTransportError, match="another host"):
        c.versions("g/p", 1)
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("headers", "wait_ms"),
    [
        ({"Retry-After": "7"}, 7_000),
        ({"RateLimit-Reset": str(NOW_MS // 1000 + 30)}, 30_000),
        ({"RateLimit-ResetTime": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30_000),
        ({}, 60_000),
    ],
)
def test_a_429_says_when_to_come_back(headers: dict[str, str], wait_ms: int) -> None:
    c, seen = client(lambda r: httpx.Response(429, text="Retry later\n", headers=headers))
    with pytest.raises(GitLabRateLimited) as caught:
        c.list_discussions("g/p", 1)
    assert caught.value.retry_at_ms - NOW_MS == wait_ms and "Retry later" in str(caught.value)
    assert len(seen) == 1  # no hidden retry, no sleep


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, {"message": "401 Unauthorized"}, GitLabAuthError),
        (403, {"message": "403 Forbidden"}, GitLabAuthError),
        (404, {"message": "404 Project Not Found"}, GitLabNotFound),
        (400, {"message": "400 Bad request - Note {:line_code=>[...]}"}, GitLabBadRequest),
        (502, None, GitLabServerError),
        (500, {"message": {"base": ["went wrong"]}}, GitLabServerError),
    ],
)
def test_each_failure_has_its_type_and_never_the_token(
    status: int, body: object, kind: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, text=f"proxy says {TOKEN}")
        return httpx.Response(status, json=body)

    caplog.set_level(logging.DEBUG)
    c, _ = client(handler)
    with pytest.raises(kind) as caught:
        c.create_note("g/p", 1, body="hello")
    assert TOKEN not in str(caught.value) and TOKEN not in caplog.text


def test_timeouts_say_whether_gitlab_may_have_seen_the_request() -> None:
    def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(GitLabTransportError) as sent:
        client(read_timeout)[0].create_note("g/p", 1, body="x")
    with pytest.raises(GitLabTransportError) as not_sent:
        client(refused)[0].merge_request("g/p", 1)
    assert sent.value.maybe_sent and not not_sent.value.maybe_sent


def test_raw_files_stop_reading_past_the_cap() -> None:
    c, seen = client(lambda r: httpx.Response(200, content=b"x" * 5000))
    assert c.raw_file("g/p", "src/a b.py", "abc", max_bytes=4000) is None
    assert c.raw_file("g/p", "src/a b.py", "abc", max_bytes=6000) == b"x" * 5000
    assert seen[0].url.raw_path.startswith(
        b"/gitlab/api/v4/projects/g%2Fp/repository/files/src%2Fa%20b.py/raw"
    )
    assert seen[0].url.params["ref"] == "abc"


def test_a_diff_gitlab_withheld_is_listed_with_its_reason() -> None:
    too_large = to_changed_file(GitLabDiff(old_path="a", new_path="a", too_large=True))
    generated = to_changed_file(
        GitLabDiff(
            old_path="g.pb.go", new_path="g.pb.go", diff="@@ -1 +1 @@\n-a\n+b", generated_file=True
        )
    )
    renamed = to_changed_file(
        GitLabDiff(
            old_path="old.py", new_path="new.py", diff="@@ -1 +1 @@\n-a\n+b", renamed_file=True
        )
    )
    assert too_large.withheld == TOO_LARGE and too_large.patch is None
    assert generated.withheld is not None and "generated" in generated.withheld
    assert renamed.status == "renamed" and renamed.previous_filename == "old.py"
    assert (renamed.additions, renamed.deletions) == (1, 1)


def test_a_token_that_could_break_a_header_is_refused() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        GitLabClient("bad token\n")
    with pytest.raises(ValueError, match="http"):
        GitLabClient(TOKEN, base_url="ftp://gitlab.example.com")
