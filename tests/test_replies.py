"""Reading model replies back and gathering them into one review.

The round trip runs the provider simulator's fake model on the very text a planned
message sends, so it checks that planning, the request, the reply parser and the line
anchoring agree with an independent diff reader.
"""

from __future__ import annotations

import json
import time

import pytest
from markdown_referee import hazards

from scheduler.config.planning import PlanningConfig
from scheduler.sandbox.provider.review import parse_diff, review_content
from scheduler.state.refs import PullRequestRef
from workers.review.changes import ChangedFile
from workers.review.diff import new_side_lines
from workers.review.model import ReviewComment
from workers.review.plan import PlannedMessage, ReviewPlan, SkippedFile
from workers.review.planning import build_request, plan_review
from workers.review.replies import Reply, gather, parse_reply

REF = PullRequestRef(
    id="acme/api#7", head_sha="0123456789abcdef0123", owner="acme", repo="api", number=7
)

# New side of app.py: 10 context, 11-12 added, 13 context (old 11 was removed).
APP = "@@ -10,3 +10,4 @@ def run():\n ctx\n-old\n+new one\n+new two\n ctx2"
# lib.py is all new: lines 1-2.
LIB = "@@ -0,0 +1,2 @@\n+a\n+b"


def _message() -> PlannedMessage:
    files = [
        ChangedFile(filename="src/app.py", additions=2, deletions=1, changes=3, patch=APP),
        ChangedFile(filename="lib.py", status="added", additions=2, changes=2, patch=LIB),
    ]
    return plan_review(files, PlanningConfig()).messages[0]


def _reply(comments: list[object], summary: str = "Looks fine.") -> str:
    return json.dumps({"summary": summary, "comments": comments})


def test_new_side_lines_are_added_and_context_lines() -> None:
    assert new_side_lines(_message().text) == {
        "src/app.py": frozenset({10, 11, 12, 13}),
        "lib.py": frozenset({1, 2}),
    }


@pytest.mark.parametrize(
    "wrap",
    [
        lambda j: j,
        lambda j: f"```json\n{j}\n```",
        lambda j: f"Here is my review:\n\n```\n{j}\n```\nThanks!",
        lambda j: f"Sure. {j} Let me know if you need more.",
    ],
    ids=["bare", "json fence", "plain fence", "prose around"],
)
def test_replies_are_read_bare_fenced_or_amid_prose(wrap: object) -> None:
    assert callable(wrap)
    content = wrap(_reply([{"path": "src/app.py", "line": 11, "body": "Name it better."}]))
    reply = parse_reply(content, _message())
    assert reply == Reply(
        summary="Looks fine.",
        comments=(ReviewComment(path="src/app.py", line=11, body="Name it better."),),
    )


def test_prose_with_braces_before_the_json_still_finds_it() -> None:
    content = 'Use {x} not {y}: {"a": 1} ' + _reply([{"path": "lib.py", "line": 2, "body": "ok"}])
    assert parse_reply(content, _message()).comments == (
        ReviewComment(path="lib.py", line=2, body="ok"),
    )


def test_garbage_is_unusable_and_none_of_its_text_is_kept() -> None:
    """Issue 20: raw model text is never posted; an answer without a review in it is
    unusable (the job retries it once, then fails the message)."""
    unusable = Reply(summary="", comments=(), usable=False)
    for content in (
        "  The model rambled instead of answering in JSON.\n",
        "",
        "x " * 5000,
        '{"answer": 42}',
    ):
        assert parse_reply(content, _message()) == unusable


def test_a_bare_list_is_taken_as_the_comments() -> None:
    reply = parse_reply('[{"path": "lib.py", "line": 1, "body": "first"}]', _message())
    assert reply.summary == "" and reply.comments == (
        ReviewComment(path="lib.py", line=1, body="first"),
    )


def test_only_lines_the_model_saw_are_anchored() -> None:
    comments: list[object] = [
        {"path": "src/app.py", "line": 10, "body": "context line"},
        {"path": "b/src/app.py", "line": "12", "body": "b/ prefix, line as text"},
        {"path": "./lib.py", "line": 1.0, "body": "./ prefix, line as float"},
        {"path": "src/app.py", "line": 14, "body": "past the hunk"},
        {"path": "src/app.py", "line": 9, "body": "before the hunk"},
        {"path": "src/other.py", "line": 3, "body": "a file not in this message"},
        {"path": "lib.py", "line": True, "body": "a boolean is no line"},
        {"path": "lib.py", "body": "no line at all"},
        {"body": "no path either"},
        {"path": "lib.py", "line": 1, "body": "   "},
        {"path": "lib.py", "line": 1},
        "not an object",
        {"file": "lib.py", "line": 2, "comment": "other key names"},
    ]
    reply = parse_reply(_reply(comments), _message())
    assert reply.comments == (
        ReviewComment(path="src/app.py", line=10, body="context line"),
        ReviewComment(path="src/app.py", line=12, body="b/ prefix, line as text"),
        ReviewComment(path="lib.py", line=1, body="./ prefix, line as float"),
        ReviewComment(path="lib.py", line=2, body="other key names"),
    )
    assert reply.unanchored == (
        "`src/app.py:14`: past the hunk",
        "`src/app.py:9`: before the hunk",
        "`src/other.py:3`: a file not in this message",
        "`lib.py`: a boolean is no line",
        "`lib.py`: no line at all",
        "no path either",
    )


def test_comments_on_a_summary_message_are_never_anchored() -> None:
    files = [
        ChangedFile(filename=f"f{i}.py", additions=2, deletions=1, changes=3, patch=APP)
        for i in range(4)
    ]
    plan = plan_review(files, PlanningConfig(large_pr_files=2, large_pr_full_files=1))
    summary = next(m for m in plan.messages if m.kind == "summary")
    reply = parse_reply(_reply([{"path": "f3.py", "line": 11, "body": "hm"}]), summary)
    assert reply.comments == () and reply.unanchored == ("`f3.py:11`: hm",)


def test_round_trip_through_the_simulated_model_anchors_every_comment() -> None:
    big = "@@ -1,1 +1,400 @@\n" + "\n".join(f"+line {i}" for i in range(400)) + "\n ok"
    big = big.replace("+1,400", "+1,401")
    files = [
        ChangedFile(filename="src/app.py", additions=2, deletions=1, changes=3, patch=APP),
        ChangedFile(filename="lib.py", status="added", additions=2, changes=2, patch=LIB),
        ChangedFile(filename="src/big.py", additions=400, changes=400, patch=big),
    ]
    plan = plan_review(files, PlanningConfig(max_message_tokens=500))
    assert any(m.part for m in plan.messages) and len(plan.messages) > 3
    replies = {}
    for message in plan.messages:
        request = build_request(message, model="sim")
        reply = parse_reply(review_content(request.messages[-1].content), message)
        assert reply.unanchored == () and reply.comments, message.text
        replies[message.index] = reply
    review = gather(REF, plan, replies, {})
    original = {
        (h.path, n) for f in files for h in parse_diff(f"+++ b/{f.filename}\n{f.patch}")
        for n, _ in h.added
    }  # fmt: skip
    assert {(c.path, c.line) for c in review.comments} <= original
    assert len(review.comments) == len(plan.messages) + 1  # one per hunk shown
    assert review.messages_done == len(plan.messages) and review.messages_failed == 0


# ------------------------------------------------------------------------------ gather


def _plan(**kwargs: object) -> ReviewPlan:
    base: dict[str, object] = {
        "messages": (
            PlannedMessage(index=0, files=("a.py", "b.py", "c.py", "d.py"), text="", tokens=1),
            PlannedMessage(index=1, files=("big.py",), text="", tokens=1, part=(1, 2)),
            PlannedMessage(index=2, files=("big.py",), text="", tokens=1, part=(2, 2)),
            PlannedMessage(index=3, files=("x.md", "y.md"), text="", tokens=1, kind="summary"),
        ),
        "skipped": (SkippedFile(path="yarn.lock", reason="lockfile"),),
        "summarised": ("x.md", "y.md"),
        "degraded": True,
        "note": "Only the riskiest files were reviewed in full.",
    }
    return ReviewPlan.model_validate({**base, **kwargs})


def _c(path: str, line: int, body: str = "x") -> ReviewComment:
    return ReviewComment(path=path, line=line, body=body)


def test_gather_merges_deduplicates_and_orders_comments() -> None:
    replies = {
        2: Reply(summary="part two", comments=(_c("big.py", 300, "b"), _c("big.py", 300, "a"))),
        0: Reply(summary="four files", comments=(_c("b.py", 3), _c("a.py", 9), _c("a.py", 2))),
        1: Reply(summary="part one", comments=(_c("big.py", 300, "b"), _c("a.py", 2))),
    }
    review = gather(REF, _plan(), replies, {3: "provider said 500 three times"})
    assert review.comments == (
        _c("a.py", 2),
        _c("a.py", 9),
        _c("b.py", 3),
        _c("big.py", 300, "b"),  # reply 1 came first in message order
        _c("big.py", 300, "a"),
    )
    assert (review.pr, review.head_sha, review.stale) == (REF.id, REF.head_sha, False)
    assert (review.messages_done, review.messages_failed) == (3, 1)


def test_gather_body_says_what_was_and_was_not_reviewed() -> None:
    replies = {
        0: Reply(summary="Four files look fine.", comments=(), unanchored=("`a.py:99`: odd",)),
        2: Reply(summary="Second half ok.", comments=(), unanchored=("general remark",)),
    }
    body = gather(REF, _plan(), replies, {3: "HTTP 400: context too long"}).summary
    assert "> **Large pull request.** Only the riskiest files were reviewed in full." in body
    # four files are named, never "and 1 more" where a name fits
    assert "- **`a.py`, `b.py`, `c.py`, `d.py`**: Four files look fine." in body
    assert "- **`big.py`, part 2 of 2**: Second half ok." in body
    assert (
        "**Remarks not tied to a changed line (2)**\n\n- `a.py:99`: odd\n- general remark" in body
    )
    assert "**Only summarised (2)**\n\n- `x.md`\n- `y.md`" in body
    assert "**Skipped (1)**\n\n- `yarn.lock`: lockfile" in body
    assert "- message 2 (`big.py`, part 1 of 2): no answer was recorded for it" in body
    # the author reads what happened, not the operator's reason (`reviewq inspect` has it)
    assert (
        "- message 4 (summary of 2 file(s)): this part is too large for the model to read "
        "in one request" in body
    )
    assert "HTTP 400" not in body
    order = ["Large pull request", "Four files", "Remarks", "Only summarised", "Skipped", "Not"]
    positions = [body.index(marker) for marker in order]
    assert positions == sorted(positions)


def test_a_single_message_review_reads_as_plain_prose() -> None:
    plan = ReviewPlan(
        messages=(PlannedMessage(index=0, files=("a.py",), text="", tokens=1),), skipped=()
    )
    review = gather(REF, plan, {0: Reply(summary="All good.", comments=())}, {})
    assert review.summary == "All good."
    empty = gather(REF, ReviewPlan(messages=(), skipped=()), {}, {})
    assert empty.summary == "No reviewable changes." and empty.comments == ()


def test_many_skipped_files_are_collapsed_and_capped() -> None:
    skipped = tuple(SkippedFile(path=f"vendor/m{i:03}.go", reason="vendored") for i in range(250))
    body = gather(REF, _plan(skipped=skipped[:10]), {}, {}).summary
    assert "<details>" not in body.split("**Skipped")[1]
    body = gather(REF, _plan(skipped=skipped), {}, {}).summary
    assert "<details><summary>**Skipped (250)**</summary>" in body
    assert "- `vendor/m199.go`: vendored\n- … and 50 more\n\n</details>" in body
    assert "m200.go" not in body


def test_a_reply_beats_an_earlier_failure_and_stale_reviews_say_so() -> None:
    replies = {i: Reply(summary=f"s{i}", comments=()) for i in range(4)}
    review = gather(REF, _plan(), replies, {1: "timed out"}, stale=True)
    assert (review.messages_done, review.messages_failed, review.stale) == (4, 0, True)
    assert "Not reviewed" not in review.summary and "timed out" not in review.summary
    assert review.summary.startswith("> **Stale.** This review is of commit 0123456789ab;")


def test_a_plan_stored_without_its_messages_still_reports_everything() -> None:
    """The job layer keeps the plan's metadata and the messages apart."""
    stored = ReviewPlan.model_validate({**_plan().model_dump(), "messages": ()})
    replies = {
        0: Reply(summary="first", comments=(_c("a.py", 1),)),
        2: Reply(summary="third", comments=()),
    }
    review = gather(REF, stored, replies, {1: "quota"})
    assert "- **message 1**: first\n- **message 3**: third" in review.summary
    assert "- message 2: the model could not be asked for a review" in review.summary
    assert "quota" not in review.summary
    assert review.comments == (_c("a.py", 1),) and review.messages_failed == 1


def test_the_body_stays_under_githubs_limit() -> None:
    replies = {
        i: Reply(
            summary="w" * 3000, comments=(), unanchored=tuple(f"{i}-{k}" * 200 for k in range(5))
        )
        for i in range(40)
    }
    plan = ReviewPlan(messages=(), skipped=())
    body = gather(REF, plan, replies, {}).summary
    assert len(body) <= 65_000 and body.endswith("… (review body truncated)")


def test_replies_and_messages_survive_json_as_the_job_layer_stores_them() -> None:
    message = _message()
    reply = parse_reply(_reply([{"path": "lib.py", "line": 1, "body": "b"}]), message)
    assert Reply.model_validate_json(reply.model_dump_json()) == reply
    split = _plan().messages[1]
    assert PlannedMessage.model_validate_json(split.model_dump_json()) == split
    assert parse_reply(_reply([{"path": "lib.py", "line": 1, "body": "b"}]), message) == reply


# ------------------------------------------------------------- model output made safe

HOSTILE = (
    "cc @octocat @acme/security ![pixel](http://evil.example/p.png) "
    '<img src="http://evil.example/q.png">\n\n```suggestion\nreturn True\n```'
)


def _flood(path: str, count: int, body: str = "note {i}") -> tuple[ReviewComment, ...]:
    return tuple(_c(path, i + 1, body.format(i=i)) for i in range(count))


def test_every_piece_of_model_text_is_made_safe() -> None:
    content = _reply(
        [
            {"path": "src/app.py", "line": 11, "body": HOSTILE},
            {"path": "x` @octocat ![](http://evil.example/u.png) `", "line": 3, "body": HOSTILE},
        ],
        summary=HOSTILE,
    )
    reply = parse_reply(content, _message())
    plan = ReviewPlan(messages=(_message(),), skipped=())
    review = gather(REF, plan, {0: reply}, {})
    texts = [review.summary, *(c.body for c in review.comments)]
    for text in texts:
        assert hazards(text) == [], text
        assert "[image removed: pixel]" in text.replace("\\", "")
        assert "```\nreturn True\n```" in text  # the suggestion, as plain code
    assert "Remarks not tied to a changed line (1)" in review.summary


def test_a_failure_reason_never_reaches_the_author() -> None:
    """A provider's words may echo the diff: the author reads a fixed phrase instead."""
    body = gather(REF, _plan(), {}, {3: "HTTP 400: echoed @octocat <img src=x>"}).summary
    assert hazards(body) == [] and "octocat" not in body and "echoed" not in body


def test_comments_over_the_cap_are_counted_and_taken_in_turns() -> None:
    """One message that floods the review cannot crowd out the others' comments."""
    replies = {
        0: Reply(summary="flood", comments=_flood("a.py", 600)),
        1: Reply(summary="small", comments=_flood("big.py", 3, "real finding {i}")),
    }
    review = gather(REF, _plan(), replies, {})
    assert len(review.comments) == 30
    assert [c.body for c in review.comments if c.path == "big.py"] == [
        "real finding 0",
        "real finding 1",
        "real finding 2",
    ]
    # The flood keeps its first 27, in the model's order; posted in line order.
    assert [c.line for c in review.comments if c.path == "a.py"] == list(range(1, 28))
    assert "**573 more line comment(s) not posted.** A review carries at most 30" in review.summary


def test_caps_come_from_the_caller() -> None:
    replies = {0: Reply(summary="", comments=_flood("a.py", 5, "x" * 5000 + " {i}"))}
    review = gather(REF, _plan(), replies, {}, max_comments=2, max_comment_chars=300)
    assert len(review.comments) == 2 and all(len(c.body) <= 300 for c in review.comments)
    assert all(c.body.endswith("… _(truncated)_") for c in review.comments)
    assert "**3 more line comment(s) not posted.**" in review.summary
    none = gather(REF, _plan(), replies, {}, max_comments=0)
    assert none.comments == () and "**5 more line comment(s)" in none.summary


def test_ten_thousand_comments_and_remarks_are_capped_quickly() -> None:
    many = _flood("a.py", 10_000, HOSTILE + " {i}")
    loose = tuple(f"remark {i} @octocat" for i in range(10_000))
    replies = {0: Reply(summary=HOSTILE * 100, comments=many, unanchored=loose)}
    started = time.monotonic()
    review = gather(REF, _plan(), replies, {})
    assert time.monotonic() - started < 5
    assert len(review.comments) == 30 and "**9970 more line comment(s)" in review.summary
    assert "**Remarks not tied to a changed line (10000)**" in review.summary
    assert "- … and 9970 more" in review.summary
    assert hazards(review.summary) == [] and len(review.summary) <= 65_000


def test_comments_that_are_equal_once_cut_are_posted_once() -> None:
    same_start = (_c("a.py", 1, "y" * 5000 + "1"), _c("a.py", 1, "y" * 5000 + "2"))
    review = gather(REF, _plan(), {0: Reply(summary="", comments=same_start)}, {})
    assert len(review.comments) == 1 and "more line comment" not in review.summary


# ----------------------------------------------- reply parsing at its edges (mutants)


@pytest.mark.parametrize(
    ("content", "summary", "comments"),
    [
        # a dict with only one of the two keys is still a review
        ('{"summary": "Only a summary."}', "Only a summary.", ()),
        ('{"comments": [{"path": "lib.py", "line": 1, "body": "x"}]}', "", (("lib.py", 1),)),
        # a verdict is a summary by another name
        ('{"verdict": "fine"}', "fine", ()),
        # a bare list of objects is the comments
        ('[{"path": "lib.py", "line": 2, "body": "y"}]', "", (("lib.py", 2),)),
    ],
)
def test_what_counts_as_a_review(
    content: str, summary: str, comments: tuple[tuple[str, int], ...]
) -> None:
    reply = parse_reply(content, _message())
    assert reply.summary == summary
    assert tuple((c.path, c.line) for c in reply.comments) == comments


@pytest.mark.parametrize("content", ["[1, 2, 3]", "[]", "{}", '{"verdict": 3}', "null"])
def test_json_that_holds_no_review_is_unusable(content: str) -> None:
    assert parse_reply(content, _message()) == Reply(summary="", comments=(), usable=False)


@pytest.mark.parametrize("key", ["body", "comment", "message"])
def test_a_comment_body_under_any_of_its_names(key: str) -> None:
    reply = parse_reply(_reply([{"path": "lib.py", "line": 1, key: " Said so. "}]), _message())
    assert reply.comments == (ReviewComment(path="lib.py", line=1, body="Said so."),)


@pytest.mark.parametrize(
    ("path", "where"),
    [("lib.py", "lib.py"), ("b/lib.py", "lib.py"), ("./lib.py", "lib.py"), ("//lib.py", "lib.py")],
)
def test_a_comment_path_with_a_stray_prefix(path: str, where: str) -> None:
    reply = parse_reply(_reply([{"path": path, "line": 2, "body": "z"}]), _message())
    assert reply.comments == (ReviewComment(path=where, line=2, body="z"),)


def test_a_comment_without_a_path_is_kept_unanchored_as_is() -> None:
    reply = parse_reply(_reply([{"line": 2, "body": "no path"}]), _message())
    assert reply.comments == () and reply.unanchored == ("no path",)
