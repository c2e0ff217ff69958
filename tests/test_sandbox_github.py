"""The fake GitHub itself, over real HTTP with plain httpx: shapes, paging, faults, guards.

The client's tests trust the fake; these check that it answers as GitHub documents,
so that trust is earned.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from scheduler.cli.main import main
from scheduler.sandbox import DEV_GITHUB_TOKEN, create_github_app
from scheduler.sandbox.github import (
    SECONDARY_RATE_LIMIT_MESSAGE,
    FakeGitHubConfig,
    FakeGitHubServer,
    diff_lines,
    serve_fake_github,
)
from workers.review.changes import ChangedFile

AUTH = {"Authorization": f"Bearer {DEV_GITHUB_TOKEN}"}
PATCH = (
    "@@ -10,3 +10,4 @@ def f():\n a\n-b\n+B\n+C\n c\n\\ No newline at end of file\n"
    "@@ -40,1 +41,1 @@\n-x\n+y"
)
PR = "/repos/octo/app/pulls/1"


@pytest.fixture
def fake() -> Iterator[FakeGitHubServer]:
    with serve_fake_github() as server:
        server.control.add_pr(
            "octo", "app", 1, "head1", files=[ChangedFile(filename="a.py", patch=PATCH)]
        )
        yield server


def get(fake: FakeGitHubServer, path: str, **params: Any) -> httpx.Response:
    return httpx.get(fake.url + path, params=params, headers=AUTH, timeout=10)


def post_review(fake: FakeGitHubServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(fake.url + PR + "/reviews", json=body, headers=AUTH, timeout=10)


def links(response: httpx.Response) -> dict[str, int]:
    return {str(rel): int(httpx.URL(v["url"]).params["page"]) for rel, v in response.links.items()}


def test_diff_lines_knows_both_sides_of_every_hunk() -> None:
    left, right = diff_lines(PATCH)
    assert left == {10, 11, 12, 40}
    assert right == {10, 11, 12, 13, 41}
    assert diff_lines("") == (frozenset(), frozenset())


@pytest.mark.parametrize("scheme", ["Bearer", "token", "bearer"])
def test_both_auth_schemes_work(fake: FakeGitHubServer, scheme: str) -> None:
    headers = {"Authorization": f"{scheme} {DEV_GITHUB_TOKEN}"}
    reply = httpx.get(fake.url + PR, headers=headers, timeout=10)
    assert reply.status_code == 200 and reply.json()["head"]["sha"] == "head1"
    assert reply.headers["x-ratelimit-limit"] == "5000"


@pytest.mark.parametrize("value", [None, "Bearer wrong", DEV_GITHUB_TOKEN, "Basic x"])
def test_anything_else_is_bad_credentials(fake: FakeGitHubServer, value: str | None) -> None:
    headers = {} if value is None else {"Authorization": value}
    reply = httpx.get(fake.url + PR, headers=headers, timeout=10)
    assert reply.status_code == 401 and reply.json()["message"] == "Bad credentials"


def test_unknown_pr_is_404_in_githubs_shape(fake: FakeGitHubServer) -> None:
    reply = get(fake, "/repos/octo/app/pulls/2/files")
    assert reply.status_code == 404 and reply.json()["message"] == "Not Found"


def test_paging_links_like_github(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 2, "h", synthetic_files=250)
    files = "/repos/octo/app/pulls/2/files"
    first = get(fake, files, per_page=100)
    assert len(first.json()) == 100 and links(first) == {"next": 2, "last": 3}
    middle = get(fake, files, per_page=100, page=2)
    assert links(middle) == {"prev": 1, "next": 3, "last": 3, "first": 1}
    assert middle.headers["link"].index('rel="prev"') < middle.headers["link"].index('rel="next"')
    last = get(fake, files, per_page=100, page=3)
    assert len(last.json()) == 50 and links(last) == {"prev": 2, "first": 1}
    assert len(get(fake, files).json()) == 30  # GitHub's default page size
    assert len(get(fake, files, per_page=500).json()) == 100  # and its maximum
    assert get(fake, files, per_page="x").status_code == 200


def test_files_listing_stops_at_3000(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 3, "h", synthetic_files=3001)
    files = "/repos/octo/app/pulls/3/files"
    assert links(get(fake, files, per_page=100))["last"] == 30
    assert get(fake, files, per_page=100, page=31).json() == []
    assert get(fake, "/repos/octo/app/pulls/3").json()["changed_files"] == 3001


def test_file_objects_have_githubs_fields(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 4, "h", files=[ChangedFile(filename="bin.dat")])
    (item,) = get(fake, "/repos/octo/app/pulls/4/files").json()
    assert "patch" not in item  # GitHub leaves the key out for binary and huge diffs
    assert {"sha", "filename", "status", "blob_url", "raw_url", "contents_url"} <= set(item)


def test_review_on_new_and_old_side_lines_is_accepted(fake: FakeGitHubServer) -> None:
    comments = [
        {"path": "a.py", "line": 12, "body": "added line"},
        {"path": "a.py", "line": 10, "side": "RIGHT", "body": "context line"},
        {"path": "a.py", "line": 40, "side": "LEFT", "body": "removed line"},
    ]
    reply = post_review(
        fake, {"commit_id": "head1", "body": "ok", "event": "COMMENT", "comments": comments}
    )
    assert reply.status_code == 200
    review = reply.json()
    assert review["state"] == "COMMENTED" and review["commit_id"] == "head1"
    assert review["html_url"].endswith(f"/octo/app/pull/1#pullrequestreview-{review['id']}")
    stored = fake.control.reviews()
    assert len(stored) == 1 and stored[0]["pr"] == "octo/app#1" and len(stored[0]["comments"]) == 3


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"commit_id": "other"}, "No commit found for SHA: other"),
        ({"comments": [{"path": "b.py", "line": 10, "body": "x"}]}, "Path could not be resolved"),
        ({"comments": [{"path": "a.py", "line": 14, "body": "x"}]}, "Line could not be resolved"),
        ({"comments": [{"path": "a.py", "line": 40, "body": "x"}]}, "Line could not be resolved"),
        (
            {"comments": [{"path": "a.py", "position": 10, "body": "x"}]},
            "Position could not be resolved",
        ),
        (
            {"comments": [{"path": "a.py", "position": 6, "body": "x"}]},
            "Position could not be resolved",  # the `\\ No newline` line
        ),
        (
            {"comments": [{"path": "a.py", "start_line": 13, "line": 12, "body": "x"}]},
            "Start line must precede line",
        ),
        ({"event": "MERGE"}, "Event 'MERGE' is not one of APPROVE, REQUEST_CHANGES, COMMENT"),
        ({"body": "", "comments": []}, "Body is required for this event"),
        (
            {"body": "", "comments": [{"path": "a.py", "line": 12, "body": "x"}]},
            "Body is required for this event",
        ),
        ({"body": "x" * 65_537}, "Body is too long (maximum is 65536 characters)"),
    ],
)
def test_invalid_reviews_are_422_in_githubs_shape(
    fake: FakeGitHubServer, change: dict[str, Any], error: str
) -> None:
    reply = post_review(fake, {"commit_id": "head1", "body": "b", "event": "COMMENT", **change})
    assert reply.status_code == 422
    body = reply.json()
    assert body["message"] == "Unprocessable Entity" and body["errors"] == [error]
    assert body["documentation_url"].startswith("https://docs.github.com/rest/pulls/reviews")
    assert fake.control.reviews() == []


def test_comments_anchor_by_position_or_line_range(fake: FakeGitHubServer) -> None:
    """`position` counts lines below the first hunk header, later headers included."""
    comments = [
        {"path": "a.py", "position": 1, "body": "context a"},
        {"path": "a.py", "position": 8, "body": "the second hunk's -x"},
        {"path": "a.py", "start_line": 11, "line": 13, "body": "B and C"},
    ]
    reply = post_review(
        fake, {"commit_id": "head1", "body": "b", "event": "COMMENT", "comments": comments}
    )
    assert reply.status_code == 200
    stored = fake.control.reviews()[0]["comments"]
    assert [c.get("position") or c["line"] for c in stored] == [1, 8, 13]


def test_a_file_without_a_patch_takes_no_line_comments(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "head2", files=[ChangedFile(filename="a.png")])
    comment = {"path": "a.png", "line": 1, "body": "x"}
    reply = post_review(fake, {"commit_id": "head2", "body": "b", "comments": [comment]})
    assert reply.status_code == 422 and reply.json()["errors"] == ["Line could not be resolved"]


def test_an_earlier_head_stays_reviewable_with_its_own_files(fake: FakeGitHubServer) -> None:
    summary = fake.control.add_pr("octo", "app", 1, "head2", files=[ChangedFile(filename="z.py")])
    assert summary["heads"] == ["head1", "head2"]
    old = {
        "commit_id": "head1",
        "body": "b",
        "comments": [{"path": "a.py", "line": 11, "body": "x"}],
    }
    assert post_review(fake, old).status_code == 200
    assert get(fake, PR).json()["head"]["sha"] == "head2"


def test_secondary_rate_limit_fault_answers_n_times(fake: FakeGitHubServer) -> None:
    fake.control.faults(secondary_rate_limit=2, retry_after_s=30)
    replies = [get(fake, PR) for _ in range(3)]
    assert [r.status_code for r in replies] == [403, 403, 200]
    assert replies[0].json()["message"] == SECONDARY_RATE_LIMIT_MESSAGE
    assert replies[0].headers["retry-after"] == "30"
    assert replies[0].json()["documentation_url"].endswith("rate-limits-for-the-rest-api")


def test_review_5xx_before_and_after_storing(fake: FakeGitHubServer) -> None:
    fake.control.faults(review_5xx=1, review_5xx_after_create=1)
    review = {"commit_id": "head1", "body": "b", "event": "COMMENT"}
    assert post_review(fake, review).status_code == 502
    assert fake.control.reviews() == []
    assert post_review(fake, review).status_code == 502
    assert len(fake.control.reviews()) == 1  # it landed, the answer did not
    assert post_review(fake, review).status_code == 200
    assert fake.control.requests_to("POST /repos/{owner}/{repo}/pulls/{number}/reviews", 502) == 2


def test_primary_window_runs_out() -> None:
    with serve_fake_github(FakeGitHubConfig(rate_limit=2)) as fake:
        fake.control.add_pr("octo", "app", 1, "h")
        replies = [get(fake, PR) for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 403]
    assert [r.headers["x-ratelimit-remaining"] for r in replies] == ["1", "0", "0"]
    assert replies[2].json()["message"].startswith("API rate limit exceeded")


def test_stats_count_by_route_and_status(fake: FakeGitHubServer) -> None:
    get(fake, PR)
    get(fake, PR + "/files")
    get(fake, "/repos/octo/app/pulls/9")
    stats = fake.control.stats()
    assert stats["requests"] == 3
    assert stats["by_route"]["GET /repos/{owner}/{repo}/pulls/{number}"] == {"200": 1, "404": 1}
    assert stats["by_status"] == {"200": 2, "404": 1}
    fake.control.reset()
    assert fake.control.stats()["requests"] == 0


def test_control_routes_validate_their_input(fake: FakeGitHubServer) -> None:
    bad = httpx.post(
        fake.url + "/_gh/prs", json={"owner": "o/x", "repo": "r", "number": 1}, timeout=10
    )
    assert bad.status_code == 400 and "owner" in bad.json()["error"]
    assert httpx.post(fake.url + "/_gh/faults", json={"nope": 1}, timeout=10).status_code == 400
    assert httpx.post(fake.url + "/_gh/faults", content=b"{", timeout=10).status_code == 400


def test_user_names_the_tokens_account(fake: FakeGitHubServer) -> None:
    reply = get(fake, "/user")
    assert reply.status_code == 200 and reply.headers["x-ratelimit-resource"] == "core"
    user = reply.json()
    assert (user["login"], user["type"]) == ("reviewq-sandbox[bot]", "Bot")
    assert isinstance(user["id"], int)
    assert httpx.get(fake.url + "/user", timeout=10).status_code == 401
    fake.control.faults(secondary_rate_limit=1)
    assert get(fake, "/user").status_code == 403
    assert fake.control.requests_to("GET /user") == 3


def test_an_installation_token_cannot_read_user() -> None:
    with serve_fake_github(FakeGitHubConfig(installation_token=True)) as fake:
        reply = get(fake, "/user")
    assert reply.status_code == 403
    assert reply.json()["message"] == "Resource not accessible by integration"


def test_reviews_carry_their_real_author(fake: FakeGitHubServer) -> None:
    """API reviews are the token's account's; the PR author's and a deleted account's
    come in through the control route, as GitHub lists them."""
    post_review(fake, {"commit_id": "head1", "body": "mine", "event": "COMMENT"})
    by_author = fake.control.add_review("octo", "app", 1, user="octocat", body="theirs")
    gone = fake.control.add_review(
        "octo", "app", 1, user=None, body="ghost", commit_id="head1", state="APPROVED"
    )
    assert (by_author["user"]["login"], by_author["user"]["type"]) == ("octocat", "User")
    assert gone["user"] is None and gone["state"] == "APPROVED"
    listed = get(fake, PR + "/reviews").json()
    assert [(r["user"] and r["user"]["login"], r["body"]) for r in listed] == [
        ("reviewq-sandbox[bot]", "mine"),
        ("octocat", "theirs"),
        (None, "ghost"),
    ]
    assert all(r["commit_id"] == "head1" for r in listed)


def test_adding_a_review_checks_its_input(fake: FakeGitHubServer) -> None:
    review = {"owner": "octo", "repo": "app", "number": 9, "user": "x", "body": "b"}
    assert httpx.post(fake.url + "/_gh/reviews", json=review, timeout=10).status_code == 404
    del review["user"]  # whose review it is must be said, even if it is nobody's
    review["number"] = 1
    assert httpx.post(fake.url + "/_gh/reviews", json=review, timeout=10).status_code == 400
    assert fake.control.reviews() == []


def test_control_routes_refuse_callers_not_on_loopback() -> None:
    async def status(config: FakeGitHubConfig, peer: str, server: str, path: str) -> int:
        transport = httpx.ASGITransport(create_github_app(config), client=(peer, 5000))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{server}") as client:
            return (await client.get(path, headers=AUTH)).status_code

    default, opened = FakeGitHubConfig(), FakeGitHubConfig(remote_control=True)
    assert asyncio.run(status(default, "203.0.113.7", "127.0.0.1", "/_gh/stats")) == 403
    # A fake bound to every interface, reached from outside through its public address:
    assert asyncio.run(status(default, "127.0.0.1", "198.51.100.2", "/_gh/stats")) == 403
    assert asyncio.run(status(default, "127.0.0.1", "127.0.0.1", "/_gh/stats")) == 200
    assert asyncio.run(status(default, "::1", "[::1]", "/_gh/stats")) == 200
    assert asyncio.run(status(opened, "203.0.113.7", "198.51.100.2", "/_gh/stats")) == 200
    # The API itself is guarded by the token, not by the address.
    assert asyncio.run(status(default, "203.0.113.7", "198.51.100.2", PR)) == 404


@pytest.mark.parametrize("token", [None, "custom-sandbox-token-123"])
def test_cli_serves_and_prints_base_url_and_token(token: str | None) -> None:
    code = "from scheduler.cli.main import main; main()"
    args = ["sandbox", "github"] + ([] if token is None else ["--token", token])
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        base_url = lines[1].split()[1]
        assert base_url.startswith("http://127.0.0.1:")
        if token is None:
            assert DEV_GITHUB_TOKEN in lines[2]
        else:
            assert "the one given with --token" in lines[2] and token not in "".join(lines)
        pr = {"owner": "o", "repo": "r", "number": 1, "head_sha": "s"}
        assert httpx.post(f"{base_url}/_gh/prs", json=pr, timeout=10).status_code == 200
        auth = {"Authorization": f"token {token or DEV_GITHUB_TOKEN}"}
        reply = httpx.get(f"{base_url}/repos/o/r/pulls/1", headers=auth, timeout=10)
        assert reply.status_code == 200 and reply.json()["head"]["sha"] == "s"
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def test_cli_refuses_a_token_with_whitespace() -> None:
    result = CliRunner().invoke(main, ["sandbox", "github", "--token", "my secret"])
    assert result.exit_code == 2 and "whitespace" in result.output
