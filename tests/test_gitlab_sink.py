"""The GitLab sink against the fake GitLab over real HTTP, under at-least-once delivery.

Every "posted twice" here is a finalize job run again after a crash, a timeout or a
502: the second run must find what the first stored (by reviewq's own account only)
and leave exactly one summary note per MR head, each inline comment once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scheduler.sandbox.gitlab import (
    LINE_CODE_MESSAGE,
    FakeGitLabConfig,
    FakeGitLabServer,
    MrFile,
    serve_fake_gitlab,
)
from scheduler.state.refs import PullRequestRef
from workers.forge.gitlab import GitLabClient, GitLabRateLimited, GitLabServerError
from workers.forge.gitlab_sink import GitLabSink
from workers.forge.sinks import review_marker
from workers.review.model import Review, ReviewComment

PROJECT, IID, SHA = "grp/sub/app", 12, "abc1234def"
PR = f"{PROJECT}!{IID}"
NOTES = "POST /projects/:id/merge_requests/:iid/notes"
THREADS = "POST /projects/:id/merge_requests/:iid/discussions"
ADDED = ReviewComment(path="app.py", line=3, body="`b` changed meaning")
CONTEXT = ReviewComment(path="app.py", line=5, body="unchanged, but now wrong")
OFF = ReviewComment(path="app.py", line=90, body="this line is not in the diff")
BIG = ReviewComment(path="big.txt", line=1501, body="in the collapsed file")


def big_file(stored_diff: str | None = None) -> MrFile:
    """A file GitLab collapses (its diff is over the fake's limit): the sink diffs it
    from its two sides. `stored_diff` is the diff the fake judges positions by."""
    old = "".join(f"line {n}\n" for n in range(1, 3001))
    new = old.replace("line 1501\n", "line 1501 changed\n")
    diff = "\n".join(list(difflib.unified_diff(old.split("\n"), new.split("\n"), lineterm=""))[2:])
    return MrFile(
        old_path="big.txt",
        new_path="big.txt",
        diff=(stored_diff or diff) + "\n" + " " * 300,
        old_content=old,
        new_content=new,
    )


def files(stored_big: str | None = None) -> list[MrFile]:
    patch = "@@ -1,4 +1,5 @@\n a = 1\n-b = 2\n+b = 3\n+c = 4\n d = 5\n e = 6\n"
    return [MrFile(old_path="app.py", new_path="app.py", diff=patch), big_file(stored_big)]


@pytest.fixture
def fake() -> Iterator[FakeGitLabServer]:
    with serve_fake_gitlab(FakeGitLabConfig(collapse_chars=300)) as served:
        served.control.add_mr(PROJECT, IID, SHA, files=files())
        yield served


def sink(fake: FakeGitLabServer, **kw: Any) -> GitLabSink:
    return GitLabSink(GitLabClient(fake.token, base_url=fake.url), **kw)


def ref() -> PullRequestRef:
    return PullRequestRef(
        id=PR, head_sha=SHA, forge="gitlab", owner="grp/sub", repo="app", number=IID
    )


def review(*comments: ReviewComment) -> Review:
    return Review(pr=PR, head_sha=SHA, summary="Looks fine.", comments=comments)


def summaries(fake: FakeGitLabServer) -> list[dict[str, Any]]:
    marker = review_marker(PR, SHA)
    return [n for n in fake.control.notes() if n["body"].startswith(marker)]


def inline(fake: FakeGitLabServer) -> list[tuple[int, int | None]]:
    return [
        (n["position"]["new_line"], n["position"].get("old_line"))
        for n in fake.control.notes()
        if n["position"]
    ]


def test_comments_land_on_their_lines_and_one_note_sums_up(fake: FakeGitLabServer) -> None:
    result = sink(fake).post(review(ADDED, CONTEXT, OFF, BIG), ref())
    assert result.posted and result.folded_comments == 1
    assert sorted(inline(fake)) == [(3, None), (5, 4), (1501, None)]  # context: both sides
    (note,) = summaries(fake)
    assert note["author"]["username"] == "reviewq-bot" and note["position"] is None
    assert "Comments GitLab could not place" in note["body"] and "line 90" in note["body"]
    again = sink(fake).post(review(ADDED, CONTEXT, OFF, BIG), ref())
    assert again.already_posted and not again.posted
    assert len(fake.control.notes()) == 4
    assert fake.control.requests_to(NOTES) == 1 and fake.control.requests_to(THREADS) == 3


def test_a_position_gitlab_refuses_is_folded_into_the_note(fake: FakeGitLabServer) -> None:
    """GitLab's own diff of the big file differs from the one its two sides give (the
    fake judges by a hunk elsewhere): its 400 folds that comment, the rest land."""
    fake.control.add_mr(PROJECT, IID, SHA, files=files(stored_big="@@ -1,1 +1,1 @@\n-x\n+y"))
    result = sink(fake).post(review(ADDED, BIG), ref())
    assert result.folded_comments == 1 and inline(fake) == [(3, None)]
    assert fake.control.requests_to(THREADS, 400) == 1
    assert LINE_CODE_MESSAGE.startswith("400 Bad request - Note {:line_code")
    assert "in the collapsed file" in summaries(fake)[0]["body"]


def test_a_note_stored_before_a_502_is_found_again(fake: FakeGitLabServer) -> None:
    fake.control.faults(after_create=1)  # the first POST: the note, stored, then 502
    with pytest.raises(GitLabServerError):
        sink(fake).post(review(), ref())
    assert sink(fake).post(review(), ref()).already_posted
    assert len(summaries(fake)) == 1


def test_a_comment_stored_before_a_502_is_not_posted_again(fake: FakeGitLabServer) -> None:
    fake.control.faults(after_create=1)  # the first inline comment, stored, then 502
    with pytest.raises(GitLabServerError):
        sink(fake).post(review(ADDED, CONTEXT), ref())
    assert sink(fake).post(review(ADDED, CONTEXT), ref()).posted
    assert sorted(inline(fake)) == [(3, None), (5, 4)] and len(summaries(fake)) == 1


def test_a_rate_limit_is_raised_with_its_time_and_posts_nothing(fake: FakeGitLabServer) -> None:
    fake.control.faults(rate_limit=1, retry_after_s=None, reset_in_s=30)
    with pytest.raises(GitLabRateLimited) as caught:
        sink(fake).post(review(ADDED), ref())
    assert caught.value.retry_at_ms > 0 and fake.control.notes() == []


def test_only_reviewqs_own_account_counts(fake: FakeGitLabServer) -> None:
    """A marker planted by someone else, even at the start of a note, posts nothing
    less; `[review] gitlab_username` saves the `GET /user` call."""
    planted = review_marker(PR, SHA) + "\n\nnothing to see"
    fake.control.add_note(PROJECT, IID, username="mallory", body=planted)
    assert sink(fake, username="reviewq-bot").post(review(), ref()).posted
    assert fake.control.requests_to("GET /user") == 0
    assert [n["author"]["username"] for n in summaries(fake)] == ["mallory", "reviewq-bot"]
    assert sink(fake, username="someone-else").post(review(), ref()).posted  # not its own


def test_a_review_of_an_older_head_folds_its_comments(fake: FakeGitLabServer) -> None:
    """The MR moved on: positions from its latest version would point at other code."""
    fake.control.add_mr(PROJECT, IID, "fff0000111", files=files())
    result = sink(fake).post(review(ADDED, CONTEXT), ref())
    assert result.posted and result.folded_comments == 2 and inline(fake) == []


def test_the_fake_refuses_what_gitlab_refuses(fake: FakeGitLabServer) -> None:
    api = f"{fake.url}/api/v4/projects"
    token = {"PRIVATE-TOKEN": fake.token}
    assert httpx.get(f"{api}/grp%2Fsub%2Fapp/merge_requests/12", headers=token).status_code == 200
    unencoded = httpx.get(f"{api}/grp/sub/app/merge_requests/12", headers=token)
    assert unencoded.status_code == 404  # GitLab wants the path as one segment
    wrong = httpx.get(f"{api}/grp%2Fsub%2Fapp/merge_requests/12", headers={"PRIVATE-TOKEN": "x"})
    assert wrong.status_code == 401 and fake.token not in wrong.text
    bearer = {"Authorization": f"Bearer {fake.token}"}
    assert httpx.get(f"{fake.url}/api/v4/user", headers=bearer).json()["username"] == "reviewq-bot"
    missing = httpx.get(f"{api}/grp%2Fsub%2Fapp/merge_requests/99", headers=token)
    assert missing.status_code == 404 and missing.json() == {"message": "404 Not found"}
