"""What a PR's author reads can be trusted (issue 20): answers cut off at the length
limit, findings already posted, lists that name every file, and no operator jargon.

- An answer the provider marked `finish_reason: length` counts only for the complete
  comments rescued from it; otherwise it is retried with the stricter instruction and,
  cut again, listed as not reviewed (through the real pipeline, `review_harness`).
- A comment already posted on the PR, on the same line and the same code, is not
  posted again by a later push's review; it is listed with a link (`review_memory`,
  against the tests' Redis).
- "… and 1 more" never takes the place of the one name it would stand for.
- The reasons recorded for the operator (HTTP codes, settings, "raise max_tokens")
  never reach the review; the author reads a fixed phrase.
- Every planned message records the prompt version it is sent in (docs/prompt.md).
"""

from __future__ import annotations

import json
import re

import pytest
import redis as redis_py
from review_harness import Cut, Deployment, deployment

from scheduler.config.planning import PlanningConfig
from scheduler.state.keys import Keys
from scheduler.state.records import read_pr
from scheduler.state.refs import PullRequestRef
from workers.forge.sinks import LogSink
from workers.providers.classify import classify
from workers.review.diff import parse_unified_diff
from workers.review.model import DEFAULT_MAX_COMMENTS, Review, ReviewComment
from workers.review.plan import PlannedMessage, ReviewPlan, SkippedFile
from workers.review.planning import plan_review
from workers.review.prompt import PROMPT_VERSION, build_request, prompt_text
from workers.review.replies import UNREADABLE, Reply, gather
from workers.review_memory import new_only, remember

SMALL_DIFF = """\
diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -10,3 +10,4 @@ def run():
 ctx
-old
+new = compute()
+return new
 tail
"""
FIRST = {"path": "src/app.py", "line": 12, "body": "Is `new` ever None here?"}
GOOD = json.dumps({"summary": "Adds a computed return value.", "comments": [FIRST]})
# Cut off inside the first comment: only a summary is complete.
CUT_BEFORE_ANY = GOOD[: GOOD.index("ever")]
# Cut off inside the second comment: the first is complete.
TWO = {"summary": "Adds a computed return value.", "comments": [FIRST, FIRST | {"line": 13}]}
CUT_AFTER_ONE = json.dumps(TWO)[: json.dumps(TWO).rindex("ever")]
# Words that mean something to the operator only.
JARGON = ("max_tokens", "finish_reason", "base_url", "[review]", "HTTP", "retries:", "raise ")


def _local(unique: str) -> PullRequestRef:
    return PullRequestRef(id=f"local-{unique}", head_sha="abc1234", forge="local")


def _outcome(dep: Deployment, ref: PullRequestRef) -> tuple[str, Review]:
    view = read_pr(dep.admission.redis, dep.admission.keys, ref.id)
    assert view is not None
    (state,) = view.current().values()
    review = LogSink.get(dep.admission.redis, ref.id, prefix=dep.spec.prefix)
    assert review is not None
    return state.status, review


def test_a_cut_answer_with_no_complete_comment_is_retried_then_listed_as_not_reviewed(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    with deployment(redis, redis_url, unique, [Cut(CUT_BEFORE_ANY)]) as dep:
        ref = _local(unique)
        dep.review(ref, {"kind": "diff", "text": SMALL_DIFF})
        status, review = _outcome(dep, ref)
        assert len(dep.model.requests) == 2  # the one retry, with the stricter instruction
    assert status == "failed" and review.comments == ()
    assert "**Not reviewed (1)**" in review.summary
    assert "Adds a computed" not in review.summary  # the partial text is not posted
    assert "No reviewable changes" not in review.summary
    assert not any(word in review.summary for word in JARGON)


def test_a_complete_summary_cut_at_the_length_limit_is_not_a_success(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    """Valid JSON, but the provider says the model ran out of room: its findings may
    be what was cut. It is asked again, and the second answer is the review."""
    cut = Cut(json.dumps({"summary": "Nothing to flag.", "comments": []}))
    with deployment(redis, redis_url, unique, [cut, GOOD]) as dep:
        ref = _local(unique)
        dep.review(ref, {"kind": "diff", "text": SMALL_DIFF})
        status, review = _outcome(dep, ref)
        assert len(dep.model.requests) == 2
    assert status == "done" and "Nothing to flag" not in review.summary
    assert [(c.path, c.line) for c in review.comments] == [("src/app.py", 12)]


def test_a_cut_answer_counts_for_the_complete_comments_rescued_from_it(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    with deployment(redis, redis_url, unique, [Cut(CUT_AFTER_ONE)]) as dep:
        ref = _local(unique)
        dep.review(ref, {"kind": "diff", "text": SMALL_DIFF})
        status, review = _outcome(dep, ref)
        assert len(dep.model.requests) == 1
    assert status == "done"
    assert [(c.path, c.line, c.body) for c in review.comments] == [
        ("src/app.py", 12, FIRST["body"])
    ]
    assert "**Answer cut short.**" in review.summary
    assert not any(word in review.summary for word in JARGON)


def _review(pr: str, *comments: ReviewComment) -> Review:
    return Review(pr=pr, head_sha="abc", summary="Summary.", comments=comments)


def test_a_later_review_posts_no_comment_already_posted_on_the_same_line_and_code(
    redis: redis_py.Redis, unique: str
) -> None:
    keys, pr = Keys(f"t:{unique}"), f"o/r#{unique}"
    kept = ReviewComment(path="a.py", line=3, body="Check the `None` case.")
    moved_code = ReviewComment(path="a.py", line=7, body="Close the file.")
    code = {("a.py", 3): "x = f()", ("a.py", 7): "open(p)"}
    first = _review(pr, kept, moved_code)
    url = "https://github.com/o/r/pull/1#pullrequestreview-1"
    assert new_only(redis, keys, first, code) == (first, [])
    remember(redis, keys, first, code, url, ttl_s=60)

    # The next push: the same finding (spaced and cased differently) on the same line
    # and code, the other finding on a line whose code changed, and a new one.
    again = kept.model_copy(update={"body": "check the `None`   case."})
    new = ReviewComment(path="b.py", line=1, body="New finding.")
    later = _review(pr, again, moved_code, new)
    code2 = code | {("a.py", 7): "with open(p) as f:", ("b.py", 1): "y = 2"}
    posted, repeats = new_only(redis, keys, later, code2)
    assert posted.comments == (moved_code, new)
    assert [(r.comment, r.location) for r in repeats] == [(again, url)]
    assert f"`a.py:3` ([earlier review]({url}))" in posted.summary
    assert "**Earlier findings that still apply (1)**" in posted.summary


@pytest.mark.parametrize(("repeats", "named"), [(50, 50), (51, 51), (52, 50)])
def test_earlier_findings_are_all_named_or_the_rest_counted_never_one(
    redis: redis_py.Redis, unique: str, repeats: int, named: int
) -> None:
    keys, pr = Keys(f"t:{unique}"), f"o/r#{unique}"
    comments = [ReviewComment(path="a.py", line=n, body="Same.") for n in range(1, repeats + 1)]
    review = _review(pr, *comments)
    remember(redis, keys, review, {}, None, ttl_s=60)
    posted, _ = new_only(redis, keys, review, {})
    assert len(re.findall(r"^- `a\.py:\d+`", posted.summary, re.MULTILINE)) == named
    assert "and 1 more" not in posted.summary
    if named < repeats:
        assert f"- … and {repeats - named} more" in posted.summary


def _plan(files: int, skipped: int) -> ReviewPlan:
    names = tuple(f"src/f{k}.py" for k in range(files))
    message = PlannedMessage(index=0, files=names, text="", tokens=1)
    return ReviewPlan(
        messages=(message,),
        skipped=tuple(SkippedFile(path=f"gen/g{k}.py", reason="generated") for k in range(skipped)),
    )


REF = PullRequestRef(id="local-trust", head_sha="abc1234", forge="local")


@pytest.mark.parametrize("skipped", [199, 200, 201, 202])
def test_a_list_one_over_its_limit_names_that_one_instead_of_and_1_more(skipped: int) -> None:
    body = gather(REF, _plan(1, skipped), {0: Reply(summary="Fine.", comments=())}, {}).summary
    named = re.findall(r"^- `gen/g\d+\.py`: generated$", body, re.MULTILINE)
    assert "and 1 more" not in body
    assert len(named) == (skipped if skipped <= 201 else 200)
    if skipped > 201:
        assert f"- … and {skipped - 200} more" in body


@pytest.mark.parametrize(("files", "phrase"), [(4, None), (5, "and 2 more files")])
def test_a_failed_message_is_labelled_by_its_files_never_by_and_1_more(
    files: int, phrase: str | None
) -> None:
    body = gather(REF, _plan(files, 0), {}, {0: UNREADABLE}).summary
    (row,) = [r for r in body.splitlines() if r.startswith("- message 1")]
    assert "and 1 more" not in row
    shown = len(re.findall(r"`src/f\d\.py`", row))
    assert shown == (files if phrase is None else 3)
    assert phrase is None or phrase in row


def _operator_reasons() -> list[str]:
    """Reasons as the provider layer records them, from the project's own classifier."""
    answers = [
        (200, {"choices": [{"finish_reason": "length", "message": {"content": ""}}]}),
        (401, {"error": {"message": "invalid api key"}}),
        (400, {"error": {"message": "maximum context length exceeded", "code": "too_long"}}),
        (402, {"error": {"message": "insufficient balance"}}),
        (500, {"error": {"message": "internal error"}}),
    ]
    reasons = [
        classify(status, {}, json.dumps(body).encode(), now_ms=0, provider="openai").message
        for status, body in answers
    ]
    return [UNREADABLE, *(f"gave up after 5 retries: {r}" for r in reasons), *reasons]


def test_the_author_never_reads_the_operators_reasons() -> None:
    reasons = _operator_reasons()
    assert any("raise max_tokens" in r for r in reasons)  # the classifier still says it
    plan = _plan(len(reasons), 0)
    plan = plan.model_copy(
        update={
            "messages": tuple(
                PlannedMessage(index=k, files=(f"src/f{k}.py",), text="", tokens=1)
                for k in range(len(reasons))
            )
        }
    )
    review = gather(REF, plan, {}, dict(enumerate(reasons)), max_comments=0)
    rows = [r for r in review.summary.splitlines() if r.startswith("- message ")]
    assert len(rows) == len(reasons)
    for word in JARGON:
        assert word not in review.summary, word
    assert "could not be read as a review, even after a retry" in review.summary


def test_every_planned_message_records_its_prompt_version_and_is_sent_in_it() -> None:
    """A retry or rerun after a deploy sends the wording the message was planned with;
    a version with no prompt file is an error, never a silent fallback."""
    plan = plan_review(parse_unified_diff(SMALL_DIFF), PlanningConfig())
    (message,) = plan.messages
    assert message.prompt_version == PROMPT_VERSION
    request = build_request(message, model="m")
    assert request.messages[0].content == prompt_text("diff", max_comments=DEFAULT_MAX_COMMENTS)
    stored = message.model_copy(update={"prompt_version": "review-v0-missing"})
    with pytest.raises(FileNotFoundError):
        build_request(stored, model="m")
