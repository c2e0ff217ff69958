"""Sinks under at-least-once delivery: the log against real Redis, GitHub against the fake.

Every "called twice" test is a job that ran again after a crash or a retry: the second
call must report `already_posted` and leave exactly one review behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import cast

import pytest
import redis as redis_py

from scheduler.config import ConfigError
from scheduler.sandbox.github import FakeGitHubConfig, FakeGitHubServer, serve_fake_github
from scheduler.state.refs import PullRequestRef
from workers.forge.github import (
    GitHubAuthError,
    GitHubClient,
    GitHubRateLimited,
    GitHubServerError,
    GitHubUnprocessable,
)
from workers.forge.sinks import (
    MAX_BODY_CHARS,
    ForgeSink,
    GitHubSink,
    LogSink,
    PostResult,
    Sink,
    render_body,
    review_marker,
)
from workers.review.changes import ChangedFile
from workers.review.model import Review, ReviewComment

SECRET = "ghs_SinkSECRETtokenVALUE0987654321"
PATCH = "@@ -1,3 +1,4 @@\n a = 1\n-b = 2\n+b = 3\n+c = 4\n d = 5"
POST = "POST /repos/{owner}/{repo}/pulls/{number}/reviews"
GOOD = ReviewComment(path="app.py", line=3, body="`b` changed meaning")
ALSO_GOOD = ReviewComment(path="app.py", line=4, body="`c` is new")
OUTSIDE = ReviewComment(path="app.py", line=90, body="this line is not in the diff")


def ref(number: int = 1, sha: str = "abc0001") -> PullRequestRef:
    return PullRequestRef(
        id=f"octo/app#{number}", head_sha=sha, owner="octo", repo="app", number=number
    )


def review(
    number: int = 1, sha: str = "abc0001", *, comments: tuple[ReviewComment, ...] = (), **kw: object
) -> Review:
    return Review.model_validate(
        {
            "pr": f"octo/app#{number}",
            "head_sha": sha,
            "summary": "Looks fine.",
            "comments": comments,
            **kw,
        }
    )


# --- LogSink -----------------------------------------------------------------------------------


def test_log_round_trip(redis: redis_py.Redis, unique: str) -> None:
    sink = LogSink(redis, prefix=unique)
    r = review(comments=(GOOD,), messages_done=3, stale=True)
    result = sink.post(r, ref())
    assert result == PostResult(True, False, f"redis:{unique}:reviewlog:octo/app#1#abc0001", 0)
    assert LogSink.get(redis, "octo/app#1", prefix=unique) == r
    assert LogSink.get(redis, "octo/app#1", prefix=unique, head_sha="abc0001") == r
    assert LogSink.list_prs(redis, prefix=unique) == ["octo/app#1"]
    assert LogSink.get(redis, "octo/app#2", prefix=unique) is None
    assert LogSink.get(redis, "octo/app#1", prefix=unique, head_sha="nope") is None


def test_log_posting_twice_stores_once(redis: redis_py.Redis, unique: str) -> None:
    sink = LogSink(redis, prefix=unique)
    first = review()
    assert sink.post(first, ref()).posted
    again = sink.post(review(summary="A different run's words."), ref())
    assert not again.posted and again.already_posted
    assert LogSink.get(redis, "octo/app#1", prefix=unique) == first  # the first one stays
    assert set(cast(list[bytes], redis.hkeys(f"{unique}:reviewlog:octo/app#1"))) == {
        b"sha:abc0001",
        b"latest",
    }


def test_log_latest_follows_new_heads_not_redeliveries(redis: redis_py.Redis, unique: str) -> None:
    sink = LogSink(redis, prefix=unique)
    old, new = review(sha="0dd0dd0"), review(sha="eee0eee")
    sink.post(old, ref(sha="0dd0dd0"))
    sink.post(new, ref(sha="eee0eee"))
    assert sink.post(old, ref(sha="0dd0dd0")).already_posted  # a late redelivery
    assert LogSink.get(redis, "octo/app#1", prefix=unique) == new
    assert LogSink.get(redis, "octo/app#1", prefix=unique, head_sha="0dd0dd0") == old


def test_log_expires_and_lists_newest_first(redis: redis_py.Redis, unique: str) -> None:
    sink = LogSink(redis, prefix=unique, ttl_s=3600)
    for n in (1, 2, 3):
        sink.post(review(n), ref(n))
        time.sleep(0.005)  # the index orders by Redis time in ms
    sink.post(review(2, "abc0002"), ref(2, "abc0002"))
    assert 3590 <= cast(int, redis.ttl(f"{unique}:reviewlog:octo/app#1")) <= 3600
    assert 3590 <= cast(int, redis.ttl(f"{unique}:reviewlog")) <= 3600
    prs = LogSink.list_prs(redis, prefix=unique)
    assert prs[0] == "octo/app#2" and sorted(prs) == ["octo/app#1", "octo/app#2", "octo/app#3"]


def test_log_refuses_a_review_of_another_pr(redis: redis_py.Redis, unique: str) -> None:
    with pytest.raises(ValueError, match="octo/app#2"):
        LogSink(redis, prefix=unique).post(review(1), ref(2))
    assert LogSink.list_prs(redis, prefix=unique) == []


# --- GitHubSink ------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeGitHubServer]:
    with serve_fake_github() as server:
        files = [ChangedFile(filename="app.py", patch=PATCH), ChangedFile(filename="logo.png")]
        server.control.add_pr("octo", "app", 1, "abc0001", files=files)
        yield server


@pytest.fixture
def sink(fake: FakeGitHubServer) -> GitHubSink:
    return GitHubSink(GitHubClient(fake.token, base_url=fake.url))


def test_both_sinks_satisfy_the_protocol(
    redis: redis_py.Redis, unique: str, sink: GitHubSink
) -> None:
    sinks: list[Sink] = [LogSink(redis, prefix=unique), sink]
    assert [s.name for s in sinks] == ["log", "github"]


def test_github_posts_exactly_once_when_called_twice(
    fake: FakeGitHubServer, sink: GitHubSink
) -> None:
    r = review(comments=(GOOD, ALSO_GOOD))
    first = sink.post(r, ref())
    second = sink.post(r, ref())
    assert first.posted and not first.already_posted and first.folded_comments == 0
    assert not second.posted and second.already_posted and second.location == first.location
    (stored,) = fake.control.reviews()
    assert stored["html_url"] == first.location and stored["commit_id"] == "abc0001"
    assert stored["state"] == "COMMENTED"
    assert stored["body"].startswith(review_marker("octo/app#1", "abc0001"))
    assert "Looks fine." in stored["body"] and "Stale" not in stored["body"]
    assert [(c["path"], c["line"]) for c in stored["comments"]] == [("app.py", 3), ("app.py", 4)]


def test_github_502_before_storing_then_a_retry_posts_once(
    fake: FakeGitHubServer, sink: GitHubSink
) -> None:
    fake.control.faults(review_5xx=1)
    with pytest.raises(GitHubServerError):
        sink.post(review(), ref())
    assert fake.control.reviews() == []
    assert sink.post(review(), ref()).posted
    assert sink.post(review(), ref()).already_posted
    assert len(fake.control.reviews()) == 1


def test_github_502_after_storing_is_found_by_its_marker(
    fake: FakeGitHubServer, sink: GitHubSink
) -> None:
    fake.control.faults(review_5xx_after_create=1)
    with pytest.raises(GitHubServerError):
        sink.post(review(), ref())
    again = sink.post(review(), ref())
    assert again.already_posted and not again.posted
    assert len(fake.control.reviews()) == 1
    assert fake.control.requests_to(POST) == 1  # the retry did not post


def test_github_folds_comments_github_cannot_place(
    fake: FakeGitHubServer, sink: GitHubSink
) -> None:
    result = sink.post(review(comments=(GOOD, OUTSIDE)), ref())
    assert result.posted and result.folded_comments == 2
    (stored,) = fake.control.reviews()
    assert stored["comments"] == []
    body = stored["body"]
    assert "**`app.py`, line 90**" in body and OUTSIDE.body in body and GOOD.body in body
    assert fake.control.requests_to(POST, 422) == 1 and fake.control.requests_to(POST, 200) == 1
    assert sink.post(review(comments=(GOOD, OUTSIDE)), ref()).already_posted


def test_github_422_with_nothing_to_fold_is_raised(
    fake: FakeGitHubServer, sink: GitHubSink
) -> None:
    with pytest.raises(GitHubUnprocessable, match="No commit found for SHA: dead000"):
        sink.post(review(sha="dead000"), ref(sha="dead000"))
    assert fake.control.reviews() == [] and fake.control.requests_to(POST) == 1


def test_github_rate_limit_is_raised_and_nothing_posted(
    fake: FakeGitHubServer, sink: GitHubSink
) -> None:
    fake.control.faults(secondary_rate_limit=1, retry_after_s=120)
    with pytest.raises(GitHubRateLimited) as info:
        sink.post(review(), ref())
    assert info.value.retry_at_ms > 0 and fake.control.reviews() == []
    assert sink.post(review(), ref()).posted


def test_github_a_new_head_gets_its_own_review(fake: FakeGitHubServer, sink: GitHubSink) -> None:
    assert sink.post(review(), ref()).posted
    fake.control.add_pr(
        "octo", "app", 1, "abc0002", files=[ChangedFile(filename="app.py", patch=PATCH)]
    )
    assert sink.post(review(sha="abc0002"), ref(sha="abc0002")).posted
    assert [r["commit_id"] for r in fake.control.reviews()] == ["abc0001", "abc0002"]


def test_github_someone_elses_review_on_the_commit_does_not_count(
    fake: FakeGitHubServer, sink: GitHubSink
) -> None:
    client = GitHubClient(fake.token, base_url=fake.url)
    client.create_review("octo", "app", 1, commit_id="abc0001", body="LGTM from a human")
    other = review_marker("octo/app#1", "abc0000")  # reviewq's, but of another commit
    client.create_review("octo", "app", 1, commit_id="abc0001", body=other)
    assert sink.post(review(), ref()).posted
    assert len(fake.control.reviews()) == 3


def test_github_a_planted_marker_by_the_pr_author_does_not_stop_the_review(
    fake: FakeGitHubServer, sink: GitHubSink
) -> None:
    """The marker is predictable: the PR's author (or a deleted account, which GitHub
    lists with no user) can leave it; only reviewq's own review counts."""
    marker = review_marker("octo/app#1", "abc0001")
    fake.control.add_review("octo", "app", 1, user="octocat", body=marker, commit_id="abc0001")
    fake.control.add_review("octo", "app", 1, user=None, body=marker, commit_id="abc0001")
    first = sink.post(review(), ref())
    assert first.posted and not first.already_posted
    again = sink.post(review(), ref())  # reviewq's own earlier review still counts
    assert again.already_posted and again.location == first.location
    users = [r["user"] and r["user"]["login"] for r in fake.control.reviews()]
    assert users == ["octocat", None, "reviewq-sandbox[bot]"]
    assert fake.control.requests_to(POST) == 1
    assert fake.control.requests_to("GET /user") == 1  # asked once per client


def test_github_own_marker_counts_only_at_the_start_of_the_body(
    fake: FakeGitHubServer, sink: GitHubSink
) -> None:
    client = GitHubClient(fake.token, base_url=fake.url)
    quoted = "A model quoted it:\n\n" + review_marker("octo/app#1", "abc0001")
    client.create_review("octo", "app", 1, commit_id="abc0001", body=quoted)
    assert sink.post(review(), ref()).posted


def test_github_login_setting_wins_and_is_case_insensitive(fake: FakeGitHubServer) -> None:
    client = GitHubClient(fake.token, base_url=fake.url)
    assert GitHubSink(client, login="Someone-Else").post(review(), ref()).posted
    # That review is the token's (reviewq-sandbox[bot]), not Someone-Else's: so a sink
    # told it posts as Someone-Else does not take it for its own.
    assert GitHubSink(client, login="someone-else").post(review(), ref()).posted
    again = GitHubSink(client, login="ReviewQ-Sandbox[bot]").post(review(), ref())
    assert again.already_posted and len(fake.control.reviews()) == 2
    assert fake.control.requests_to("GET /user") == 0


def test_github_app_token_needs_the_login_setting() -> None:
    """An installation token cannot call `GET /user`: the error names the setting, and
    nothing is posted; with the setting, posting is idempotent as ever."""
    with serve_fake_github(FakeGitHubConfig(installation_token=True)) as fake:
        fake.control.add_pr("octo", "app", 1, "abc0001", files=[ChangedFile(filename="app.py")])
        client = GitHubClient(fake.token, base_url=fake.url)
        with pytest.raises(ConfigError, match=r"\[review\] github_login") as info:
            GitHubSink(client).post(review(), ref())
        assert "Resource not accessible by integration" in str(info.value)
        assert fake.control.reviews() == []
        sink = GitHubSink(client, login="reviewq-sandbox[bot]")
        assert sink.post(review(), ref()).posted
        assert sink.post(review(), ref()).already_posted


def test_github_folded_comment_paths_cannot_break_out_of_their_code_span() -> None:
    weird = ReviewComment(path="a`@octocat`.py", line=1, body="x")
    body = render_body(review(comments=(weird,)), "m", folded=(weird,))
    assert "**`a\u02cb@\u200boctocat\u02cb.py`, line 1**" in body


def test_github_stale_review_says_so(fake: FakeGitHubServer, sink: GitHubSink) -> None:
    sink.post(review(stale=True), ref(sha="abc0009"))
    (stored,) = fake.control.reviews()
    assert stored["commit_id"] == "abc0001"
    assert "**Stale:** this review is of commit `abc0001`" in stored["body"]


def test_github_needs_a_github_ref(sink: GitHubSink) -> None:
    local = PullRequestRef(id="octo/app#1", head_sha="abc0001", forge="local")
    with pytest.raises(ValueError, match="not a GitHub PR"):
        sink.post(review(), local)


def test_github_token_stays_out_of_logs_and_errors(
    fake: FakeGitHubServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = GitHubSink(GitHubClient(SECRET, base_url=fake.url))
    with pytest.raises(GitHubAuthError) as info:
        bad.post(review(), ref())
    good = GitHubSink(GitHubClient(fake.token, base_url=fake.url))
    good.post(review(comments=(OUTSIDE,)), ref())
    assert "Bad credentials" in str(info.value) and "retrying with 1 comments" in caplog.text
    for text in (str(info.value), repr(info.value), caplog.text):
        assert SECRET not in text and fake.token not in text


def test_body_is_cut_to_githubs_limit_keeping_the_marker() -> None:
    marker = review_marker("octo/app#1", "abc0001")
    huge = review(summary="x" * 70_000)
    body = render_body(huge, marker, folded=(GOOD,))
    assert len(body) == MAX_BODY_CHARS and body.startswith(marker)
    assert body.endswith("_(truncated: the review is longer than GitHub accepts)_")
    assert render_body(review(summary="  "), marker).endswith("_No general remarks._")


# ------------------------------------------------------------ the rules, at their edges


@pytest.mark.parametrize(
    "fields",
    [
        {"forge": "gitlab"},
        {"owner": None},
        {"repo": None},
        {"number": None},
    ],
)
def test_github_needs_owner_repo_and_number(sink: GitHubSink, fields: dict[str, object]) -> None:
    """The sink's own guard, behind the ref's validation (which a ref built without it,
    `model_construct`, skips)."""
    data = {"id": "octo/app#1", "head_sha": "abc0001", "owner": "octo", "repo": "app"}
    data["number"] = 1
    data.update(fields)
    with pytest.raises(ValueError, match="not a GitHub PR"):
        sink.post(review(), PullRequestRef.model_construct(**data))


def test_github_post_results_are_booleans(fake: FakeGitHubServer, sink: GitHubSink) -> None:
    first, second = sink.post(review(), ref()), sink.post(review(), ref())
    assert (first.posted, first.already_posted) == (True, False)
    assert (second.posted, second.already_posted) == (False, True)
    assert first.posted is True and first.already_posted is False
    assert second.posted is False and second.already_posted is True


def test_stale_review_names_twelve_characters_of_its_commit() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    marker = review_marker("octo/app#1", sha)
    body = render_body(review(sha=sha, stale=True), marker)
    assert "this review is of commit `0123456789ab`;" in body


def test_log_sink_ttl_is_at_least_a_second(redis: redis_py.Redis, unique: str) -> None:
    LogSink(redis, prefix=unique, ttl_s=1)
    with pytest.raises(ValueError, match="ttl_s must be at least 1"):
        LogSink(redis, prefix=unique, ttl_s=0)


class _Recording:
    """A sink that only notes what reached it."""

    name = "recording"

    def __init__(self) -> None:
        self.got: list[str] = []

    def post(self, review: Review, ref: PullRequestRef) -> PostResult:
        self.got.append(ref.id)
        return PostResult(posted=True, already_posted=False, location=ref.id)


def test_each_review_goes_to_its_own_forge() -> None:
    """A GitLab MR to the GitLab sink, a GitHub PR to the GitHub one, a local diff to
    the log; each forge's sink is built once, on first use."""
    log, hub, lab = _Recording(), _Recording(), _Recording()
    built: list[str] = []

    def make(name: str, sink: _Recording) -> Callable[[], Sink]:
        def build() -> Sink:
            built.append(name)
            return sink

        return build

    forge = ForgeSink(log, {"github": make("github", hub), "gitlab": make("gitlab", lab)})
    sha = "abc0001"
    refs = [
        PullRequestRef(id="g/r!1", head_sha=sha, forge="gitlab", owner="g", repo="r", number=1),
        PullRequestRef(id="o/r#1", head_sha=sha, forge="github", owner="o", repo="r", number=1),
        PullRequestRef(id="l#1", head_sha=sha, forge="local"),
        PullRequestRef(id="g/r!2", head_sha=sha, forge="gitlab", owner="g", repo="r", number=2),
    ]
    for ref in refs:
        forge.post(Review(pr=ref.id, head_sha=sha, summary="ok"), ref)
    assert (lab.got, hub.got, log.got) == (["g/r!1", "g/r!2"], ["o/r#1"], ["l#1"])
    assert built == ["gitlab", "github"]
