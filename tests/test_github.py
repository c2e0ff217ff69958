"""The GitHub client against the fake GitHub over real loopback HTTP.

MockTransport appears only where the fake cannot misbehave the way a network or a
proxy does: garbage bodies, timeouts, hostile `Link` headers, echoed credentials.
"""

from __future__ import annotations

import email.utils
import logging
import pickle
import re
import time
from collections.abc import Callable, Iterator
from typing import cast

import httpx
import pytest

from scheduler.config.planning import PlanningConfig
from scheduler.sandbox.github import (
    SECONDARY_RATE_LIMIT_MESSAGE,
    FakeGitHubConfig,
    FakeGitHubServer,
    serve_fake_github,
)
from workers.forge.github import (
    DEFAULT_RETRY_AFTER_S,
    GITHUB_FILES_CAP,
    GitHubAuthError,
    GitHubClient,
    GitHubError,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubServerError,
    GitHubTransportError,
    GitHubUnprocessable,
    error_for_response,
    retry_at_ms,
)
from workers.forge.github_errors import unadvised_wait_ms
from workers.forge_retry import RETRYABLE, _github_wait_ms
from workers.review.changes import ChangedFile
from workers.review.model import ReviewComment
from workers.review.planning import plan_review
from workers.runtime import Runtime

NOW_MS = 1_700_000_000_000
FILES = "GET /repos/{owner}/{repo}/pulls/{number}/files"
REVIEWS = "GET /repos/{owner}/{repo}/pulls/{number}/reviews"
SECRET = "ghs_Zq9SECRETtokenVALUE1234567890"
PATCH = "@@ -1,3 +1,4 @@\n a = 1\n-b = 2\n+b = 3\n+c = 4\n d = 5"


@pytest.fixture
def fake() -> Iterator[FakeGitHubServer]:
    with serve_fake_github() as server:
        yield server


def client_for(fake: FakeGitHubServer, token: str | None = None) -> GitHubClient:
    return GitHubClient(token or fake.token, base_url=fake.url, clock_ms=lambda: NOW_MS)


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], base_url: str = "https://api.test"
) -> GitHubClient:
    transport = httpx.MockTransport(handler)
    return GitHubClient(SECRET, base_url=base_url, transport=transport, clock_ms=lambda: NOW_MS)


# --- reading a PR -----------------------------------------------------------------------------


def test_pull_request_reads_head_state_draft_and_title(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 7, "a1b2c3", synthetic_files=4, draft=True, title="Fix")
    info = client_for(fake).pull_request("octo", "app", 7)
    assert (info.number, info.head_sha, info.state, info.draft, info.title) == (
        7,
        "a1b2c3",
        "open",
        True,
        "Fix",
    )
    assert info.changed_files == 4


def test_list_files_follows_link_across_three_pages(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "sha1", synthetic_files=250)
    listing = client_for(fake).list_files("octo", "app", 1)
    assert not listing.truncated
    assert [f.filename for f in listing.files] == [f"src/module_{i:05d}.py" for i in range(250)]
    assert listing.files[249].patch is not None and "VALUE = 249" in listing.files[249].patch
    assert fake.control.requests_to(FILES, 200) == 3


def test_list_files_stops_at_githubs_cap_and_reports_truncation(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 2, "sha2", synthetic_files=3105)
    client = client_for(fake)
    listing = client.list_files("octo", "app", 2)
    assert len(listing.files) == GITHUB_FILES_CAP and listing.truncated
    assert listing.files[-1].filename == "src/module_02999.py"
    assert fake.control.requests_to(FILES) == 30
    assert client.pull_request("octo", "app", 2).changed_files == 3105


def test_list_files_with_a_smaller_limit_stops_early(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 3, "sha3", synthetic_files=250)
    listing = client_for(fake).list_files("octo", "app", 3, max_files=150)
    assert len(listing.files) == 150 and listing.truncated
    assert fake.control.requests_to(FILES) == 2


def test_a_file_without_a_patch_and_a_rename_come_through(fake: FakeGitHubServer) -> None:
    files = [
        ChangedFile(filename="logo.png", status="added", additions=0, patch=None),
        ChangedFile(filename="new.py", status="renamed", previous_filename="old.py", patch=PATCH),
    ]
    fake.control.add_pr("octo", "app", 4, "sha4", files=files)
    listing = client_for(fake).list_files("octo", "app", 4)
    # The fake gives each file the blob `sha` GitHub sends (incremental review reads it).
    unblobbed = tuple(f.model_copy(update={"sha": None}) for f in listing.files)
    assert unblobbed == tuple(files) and not listing.truncated
    assert listing.files[0].patch is None
    assert re.fullmatch(r"[0-9a-f]{40}", listing.files[1].sha or "")


def test_list_reviews_pages_and_create_review_sends_comments() -> None:
    with serve_fake_github(FakeGitHubConfig(max_per_page=2)) as fake:
        fake.control.add_pr(
            "octo", "app", 5, "sha5", files=[ChangedFile(filename="a.py", patch=PATCH)]
        )
        client = client_for(fake)
        comment = ReviewComment(path="a.py", line=3, body="b changed")
        made = [
            client.create_review(
                "octo", "app", 5, commit_id="sha5", body=f"r{i}", comments=[comment]
            )
            for i in range(5)
        ]
        listed = client.list_reviews("octo", "app", 5)
        assert [r.id for r in listed] == [r.id for r in made]
        assert [r.body for r in listed] == [f"r{i}" for i in range(5)]
        assert listed[0].state == "COMMENTED" and listed[0].commit_id == "sha5"
        assert fake.control.requests_to(REVIEWS) == 3
        stored = fake.control.reviews()[0]["comments"]
        assert stored == [{"path": "a.py", "line": 3, "side": "RIGHT", "body": "b changed"}]


def test_viewer_login_is_asked_once_per_client(fake: FakeGitHubServer) -> None:
    client = client_for(fake)
    assert client.viewer_login() == "reviewq-sandbox[bot]"
    assert client.viewer_login() == "reviewq-sandbox[bot]"
    assert fake.control.requests_to("GET /user") == 1
    assert client_for(fake).viewer_login() == "reviewq-sandbox[bot]"  # a new client asks
    assert fake.control.requests_to("GET /user") == 2


def test_viewer_login_errors_are_typed() -> None:
    with serve_fake_github(FakeGitHubConfig(installation_token=True)) as fake:
        with pytest.raises(GitHubError) as info:
            client_for(fake).viewer_login()
        assert info.value.status == 403 and not isinstance(info.value, GitHubRateLimited)
        assert "GET /user: Resource not accessible by integration" in str(info.value)
        with pytest.raises(GitHubAuthError):
            client_for(fake, token=SECRET).viewer_login()
        fake.control.faults(secondary_rate_limit=1)
        with pytest.raises(GitHubRateLimited):
            client_for(fake).viewer_login()


def test_a_review_by_a_deleted_account_has_no_user(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "sha")
    fake.control.add_review("octo", "app", 1, user=None, body="ghost")
    fake.control.add_review("octo", "app", 1, user="octocat", body="author")
    listed = client_for(fake).list_reviews("octo", "app", 1)
    assert [(r.user, r.body) for r in listed] == [(None, "ghost"), ("octocat", "author")]


# --- errors from the fake -----------------------------------------------------------------


def test_bad_token_is_an_auth_error(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "sha")
    with pytest.raises(GitHubAuthError) as info:
        client_for(fake, token=SECRET).pull_request("octo", "app", 1)
    assert info.value.status == 401
    assert str(info.value) == "GitHub 401: GET /repos/octo/app/pulls/1: Bad credentials"


def test_unknown_pr_is_not_found(fake: FakeGitHubServer) -> None:
    with pytest.raises(GitHubNotFound) as info:
        client_for(fake).list_files("octo", "app", 99)
    assert info.value.status == 404 and "/repos/octo/app/pulls/99/files: Not Found" in str(
        info.value
    )


def test_secondary_rate_limit_carries_retry_after(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "sha")
    fake.control.faults(secondary_rate_limit=1, retry_after_s=90)
    client = client_for(fake)
    with pytest.raises(GitHubRateLimited) as info:
        client.pull_request("octo", "app", 1)
    assert info.value.status == 403
    assert info.value.retry_at_ms == NOW_MS + 90_000
    assert SECONDARY_RATE_LIMIT_MESSAGE[:40] in info.value.message
    assert client.pull_request("octo", "app", 1).head_sha == "sha"  # only one was injected


def test_secondary_limit_without_retry_after_defaults_to_a_minute(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "sha")
    fake.control.faults(secondary_rate_limit=1, retry_after_s=None, secondary_status=429)
    with pytest.raises(GitHubRateLimited) as info:
        client_for(fake).list_reviews("octo", "app", 1)
    assert info.value.status == 429
    assert info.value.retry_at_ms == NOW_MS + DEFAULT_RETRY_AFTER_S * 1000


def test_primary_rate_limit_waits_for_the_reset_epoch(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "sha")
    fake.control.faults(primary_rate_limit=1, reset_in_s=120)
    before = int(time.time())
    with pytest.raises(GitHubRateLimited) as info:
        client_for(fake).pull_request("octo", "app", 1)
    assert (before + 120) * 1000 <= info.value.retry_at_ms <= (int(time.time()) + 120) * 1000
    assert "API rate limit exceeded" in info.value.message


def test_review_502_is_a_server_error_and_nothing_is_stored(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "sha")
    fake.control.faults(review_5xx=1)
    with pytest.raises(GitHubServerError) as info:
        client_for(fake).create_review("octo", "app", 1, commit_id="sha", body="hello")
    assert info.value.status == 502 and fake.control.reviews() == []


def test_unanchored_line_is_unprocessable_with_githubs_errors(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "sha", files=[ChangedFile(filename="a.py", patch=PATCH)])
    bad = ReviewComment(path="a.py", line=40, body="nowhere")
    with pytest.raises(GitHubUnprocessable) as info:
        client_for(fake).create_review("octo", "app", 1, commit_id="sha", body="x", comments=[bad])
    assert info.value.status == 422
    assert info.value.errors == ("Line could not be resolved",)
    assert str(info.value).endswith("Unprocessable Entity (Line could not be resolved)")


def test_unknown_commit_is_unprocessable(fake: FakeGitHubServer) -> None:
    fake.control.add_pr("octo", "app", 1, "sha")
    with pytest.raises(GitHubUnprocessable) as info:
        client_for(fake).create_review("octo", "app", 1, commit_id="nope", body="x")
    assert info.value.errors == ("No commit found for SHA: nope",)


def test_connection_refused_is_a_transport_error_that_was_not_sent() -> None:
    with serve_fake_github() as fake:
        url = fake.url
    client = GitHubClient(SECRET, base_url=url, timeout=httpx.Timeout(2.0))
    with pytest.raises(GitHubTransportError) as info:
        client.pull_request("octo", "app", 1)
    assert info.value.status is None and not info.value.maybe_sent
    assert "ConnectError" in info.value.message


# --- the token stays secret -------------------------------------------------------------------


def test_token_never_appears_in_errors_reprs_or_logs(
    fake: FakeGitHubServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(fake, token=SECRET)
    seen: list[GitHubError] = []
    for call in (
        lambda: client.pull_request("octo", "app", 1),
        lambda: client.list_files("octo", "app", 1),
        lambda: client.create_review("octo", "app", 1, commit_id="x", body="y"),
    ):
        with pytest.raises(GitHubError) as info:
            call()
        seen.append(info.value)
    assert len(seen) == 3 and all(isinstance(e, GitHubAuthError) for e in seen)
    texts = [str(e) for e in seen] + [repr(e) for e in seen] + [repr(client), caplog.text]
    assert "GET /repos/octo/app/pulls/1 -> 401" in caplog.text
    assert not [t for t in texts if SECRET in t]
    assert "[redacted]" in repr(client)


def test_an_echoed_token_is_redacted_from_githubs_words() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        said = f"proxy refused {request.headers['authorization']}"
        return httpx.Response(422, json={"message": said, "errors": [said]})

    with pytest.raises(GitHubUnprocessable) as info:
        mock_client(echo).create_review("o", "r", 1, commit_id="s", body="b")
    err = info.value
    assert SECRET not in str(err) and SECRET not in repr(err) and SECRET not in err.errors[0]
    assert "proxy refused Bearer [redacted]" in err.message


def test_a_malformed_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as info:
        GitHubClient("ghp_abc def")
    assert "ghp_abc" not in str(info.value)


# --- unit-level edge cases (MockTransport) --------------------------------------------------


def test_garbage_body_is_a_transport_error() -> None:
    client = mock_client(lambda r: httpx.Response(200, text="<html>unicorn</html>"))
    with pytest.raises(GitHubTransportError) as info:
        client.pull_request("o", "r", 1)
    assert info.value.status == 200 and info.value.message.endswith("the body is not JSON")


def test_unexpected_shape_names_the_field() -> None:
    client = mock_client(lambda r: httpx.Response(200, json={"number": 1, "state": "open"}))
    with pytest.raises(GitHubTransportError, match="unexpected response shape at head"):
        client.pull_request("o", "r", 1)


def test_read_timeout_may_have_been_sent_connect_timeout_not() -> None:
    def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    def connect_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(GitHubTransportError) as read:
        mock_client(read_timeout).create_review("o", "r", 1, commit_id="s", body="b")
    with pytest.raises(GitHubTransportError) as connect:
        mock_client(connect_timeout).pull_request("o", "r", 1)
    assert read.value.maybe_sent and not connect.value.maybe_sent
    assert read.value.message == "POST /repos/o/r/pulls/1/reviews: ReadTimeout: timed out"


def test_next_page_on_another_host_is_refused_before_sending_the_token() -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        link = '<https://evil.test/repos/o/r/pulls/1/files?page=2>; rel="next"'
        return httpx.Response(200, json=[{"filename": "a.py"}], headers={"link": link})

    with pytest.raises(GitHubTransportError, match="next page is on another host"):
        mock_client(handler).list_files("o", "r", 1)
    assert hosts == ["api.test"]


def test_enterprise_base_path_and_headers_are_used() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    client = mock_client(handler, base_url="https://ghe.test/api/v3/")
    assert client.list_files("my org", "r", 3).files == ()
    request = seen[0]
    assert request.url.raw_path == b"/api/v3/repos/my%20org/r/pulls/3/files?per_page=100"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["accept"] == "application/vnd.github+json"


def test_retry_at_follows_githubs_documented_order() -> None:
    date = email.utils.formatdate((NOW_MS + 30_000) / 1000, usegmt=True)
    reset_s = str(NOW_MS // 1000 + 600)
    assert retry_at_ms({"Retry-After": "5"}, NOW_MS) == NOW_MS + 5_000
    assert retry_at_ms({"retry-after": date}, NOW_MS) == NOW_MS + 30_000
    both = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset_s}
    assert retry_at_ms(both, NOW_MS) == NOW_MS + 600_000
    # A reset with budget left describes the primary window, not this refusal.
    left = {"x-ratelimit-remaining": "17", "x-ratelimit-reset": reset_s}
    assert retry_at_ms(left, NOW_MS) == NOW_MS + 60_000
    assert retry_at_ms({"retry-after": "soon"}, NOW_MS) == NOW_MS + 60_000
    assert retry_at_ms({"retry-after": "-3"}, NOW_MS) == NOW_MS + 60_000


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (403, {"message": "Resource not accessible by integration"}, {}, GitHubError),
        (403, {"message": "x"}, {"x-ratelimit-remaining": "0"}, GitHubRateLimited),
        (429, {"message": "Too many"}, {}, GitHubRateLimited),
        # GitHub's older secondary-limit words: no "rate limit" in them.
        (
            403,
            {"message": "You have triggered an abuse detection mechanism."},
            {},
            GitHubRateLimited,
        ),
        (403, {"message": "Forbidden"}, {"retry-after": "5"}, GitHubRateLimited),
        (503, {"message": "Unavailable"}, {}, GitHubServerError),
        (409, {"message": "Conflict"}, {}, GitHubError),
    ],
)
def test_classification(
    status: int, body: dict[str, str], headers: dict[str, str], kind: type[GitHubError]
) -> None:
    error = error_for_response(httpx.Response(status, json=body, headers=headers), "GET /x", NOW_MS)
    assert type(error) is kind and error.status == status
    assert error.message == f"GET /x: {body['message']}"


def test_structured_422_errors_are_flattened() -> None:
    body = {
        "message": "Validation Failed",
        "errors": [
            {"resource": "PullRequestReviewComment", "field": "line", "code": "invalid"},
            {"message": "pull_request_review_thread.line could not be resolved"},
            7,
        ],
    }
    error = error_for_response(httpx.Response(422, json=body), "POST /x", NOW_MS)
    assert isinstance(error, GitHubUnprocessable)
    assert error.errors == (
        "PullRequestReviewComment line invalid",
        "pull_request_review_thread.line could not be resolved",
    )


def test_errors_survive_pickling_for_the_job_queue() -> None:
    for error in (
        GitHubRateLimited(403, "slow down", NOW_MS),
        GitHubRateLimited(403, "slow down", NOW_MS, advised=False),
        GitHubUnprocessable(422, "bad", ("Line could not be resolved",)),
        GitHubTransportError(None, "gone", maybe_sent=False),
        GitHubNotFound(404, "nope"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and vars(copy) == vars(error) and str(copy) == str(error)


# --- the two gaps GitHub's description showed ----------------------------------------------


@pytest.mark.parametrize("retry_after", [30, None])
def test_an_abuse_detection_403_is_a_rate_limit_not_a_permission_error(
    fake: FakeGitHubServer, retry_after: int | None
) -> None:
    """GitHub's older secondary limit says "abuse detection", not "rate limit"; with a
    `retry-after` its time is GitHub's, without one the minute is only a floor."""
    fake.control.add_pr("octo", "app", 1, "sha")
    fake.control.faults(
        secondary_rate_limit=1, secondary_wording="abuse", retry_after_s=retry_after
    )
    with pytest.raises(GitHubRateLimited) as info:
        client_for(fake).pull_request("octo", "app", 1)
    assert info.value.status == 403 and "abuse detection" in info.value.message
    assert isinstance(info.value, RETRYABLE)  # the plan or the post is rerun, not failed
    assert info.value.advised is (retry_after is not None)
    assert info.value.retry_at_ms == NOW_MS + (retry_after or DEFAULT_RETRY_AFTER_S) * 1000


def test_a_limit_naming_no_time_waits_longer_at_each_rerun(fake: FakeGitHubServer) -> None:
    """The plan and finalize reruns carry their attempt number; a GitHub limit that
    named no time waits a minute, then twice as long each rerun, up to half an hour.
    One that named its time waits exactly that, whatever the attempt."""
    fake.control.add_pr("octo", "app", 1, "sha")
    fake.control.faults(secondary_rate_limit=2, retry_after_s=None, secondary_status=429)
    client = GitHubClient(fake.token, base_url=fake.url)
    with pytest.raises(GitHubRateLimited) as unadvised:
        client.list_reviews("octo", "app", 1)
    waits = [_github_wait_ms(cast(Runtime, None), n, unadvised.value) for n in range(8)]
    assert [w // 1000 for w in waits] == [60, 120, 240, 480, 960, 1800, 1800, 1800]
    assert [unadvised_wait_ms(n) for n in range(8)] == waits
    fake.control.faults(secondary_rate_limit=1, retry_after_s=7)
    with pytest.raises(GitHubRateLimited) as advised:
        client.list_reviews("octo", "app", 1)
    assert 5_000 <= _github_wait_ms(cast(Runtime, None), 5, advised.value) <= 7_000


def test_a_new_file_status_is_kept_and_planned_as_a_change() -> None:
    """GitHub counts a new enum value as non-breaking: a status this code does not know
    must not fail the listing, and planning reviews such a file like a modification."""
    listed = [
        {"filename": "a.py", "status": "relocated", "changes": 4, "patch": PATCH},
        {"filename": "b.bin", "status": "mystery", "changes": 1},
        {"filename": "c.py", "status": "added", "patch": PATCH},
    ]
    client = mock_client(lambda request: httpx.Response(200, json=listed))
    files = client.list_files("octo", "app", 1).files
    assert [f.status for f in files] == ["relocated", "mystery", "added"]
    plan = plan_review(files, PlanningConfig())
    assert [s.path for s in plan.skipped] == ["b.bin"]  # no patch, as any binary
    planned = "".join(m.text for m in plan.messages)
    assert "--- a/a.py\n+++ b/a.py" in planned and "--- /dev/null\n+++ b/c.py" in planned
