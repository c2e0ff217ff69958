"""A review's whole path with a model whose answers the test writes (issue 20).

Real parts (the tests' Redis, the Lua limiter, admission, RQ jobs run by a burst
worker in this process, the fake GitHub and the fake GitLab); the model is
`review_harness.ScriptedModel`. Checked here:

- an unreadable answer is retried once with the stricter instruction, charged as a
  call of its own, and read; two unreadable answers fail the message, whose text never
  reaches the review;
- a real multi-file diff (json_repair's commit 600ede6, `tests/fixtures/real_diffs/`)
  reviewed through the fake GitHub and the fake GitLab, the posted review compared with
  a golden file a person can read (`tests/golden/`); the model reads the line numbers
  the prompt prints, and every comment lands on the row whose number it named;
- a second review of the same code posts no comment twice: the repeats are listed with
  a link to the review that made them.

Set REVIEWQ_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from review_harness import Deployment, deployment

from scheduler.sandbox.github import FakeGitHubServer, serve_fake_github
from scheduler.sandbox.gitlab import MrFile, serve_fake_gitlab
from scheduler.state.records import read_pr
from scheduler.state.refs import PullRequestRef
from workers.forge.sinks import LogSink
from workers.review.diff import parse_unified_diff
from workers.review.prompt import prompt_text

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
ANSWERS = FIXTURES / "model_answers" / "answers"
REAL_DIFF = (FIXTURES / "real_diffs" / "json_repair-600ede6.diff").read_text()
GH_TOKEN_ENV, GL_TOKEN_ENV = "REVIEWQ_E2E_GH_TOKEN", "REVIEWQ_E2E_GL_TOKEN"

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
GOOD = json.dumps(
    {
        "summary": "Adds a computed return value.",
        "comments": [{"path": "src/app.py", "line": 12, "body": "Is `new` ever None here?"}],
    }
)
_ROW = re.compile(r"^\+\s*(\d+)\| (.*)$")


def _answer(name: str) -> str:
    (path,) = ANSWERS.glob(f"*-{name}.txt")
    return path.read_text(encoding="utf-8")


def _local(unique: str, sha: str = "abc1234") -> PullRequestRef:
    return PullRequestRef(id=f"local-{unique}", head_sha=sha, forge="local")


def _review_text(dep: Deployment, ref: PullRequestRef) -> tuple[str, list[Any]]:
    review = LogSink.get(dep.admission.redis, ref.id, prefix=dep.spec.prefix)
    assert review is not None
    return review.summary, list(review.comments)


def test_an_unreadable_answer_is_retried_once_with_the_stricter_instruction(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    prose = _answer("aireviewpr-issue-5-ollama-prose")
    with deployment(redis, redis_url, unique, [prose, GOOD]) as dep:
        ref = _local(unique)
        dep.review(ref, {"kind": "diff", "text": SMALL_DIFF})
        first, second = dep.model.requests
        assert first["temperature"] == 0.2 and second["temperature"] == 0.2
        assert first["messages"][-1]["role"] == "user"
        stricter = prompt_text("retry", max_comments=30)
        assert second["messages"][:2] == first["messages"][:2]
        assert second["messages"][-1] == {"role": "user", "content": stricter}
        assert prose not in json.dumps(second)  # the bad answer is not sent back
        view = read_pr(redis, dep.admission.keys, ref.id)
        assert view is not None
        (state,) = view.current().values()
        # two calls, each charged once: the model's weight (1000 milli) twice
        assert state.status == "done" and state.cost == {"requests": 2000}
        summary, comments = _review_text(dep, ref)
    assert summary == "Adds a computed return value."
    assert [(c.path, c.line, c.body) for c in comments] == [
        ("src/app.py", 12, "Is `new` ever None here?")
    ]


def test_two_unreadable_answers_fail_the_message_and_none_of_their_text_is_posted(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    answers = [_answer("thrillhousebot-issue-235-raw-tab"), _answer("pr-agent-valid-yaml")]
    with deployment(redis, redis_url, unique, answers) as dep:
        ref = _local(unique)
        dep.review(ref, {"kind": "diff", "text": SMALL_DIFF})
        assert len(dep.model.requests) == 2
        view = read_pr(redis, dep.admission.keys, ref.id)
        assert view is not None
        (state,) = view.current().values()
        assert state.status == "failed" and state.reason is not None
        assert state.reason.startswith("unreadable answer") and state.cost == {"requests": 2000}
        summary, comments = _review_text(dep, ref)
    assert comments == []
    assert "**Not reviewed (1)**" in summary
    assert "could not be read as a review, even after a retry" in summary
    for answer in answers:
        for line in filter(None, (s.strip() for s in answer.splitlines())):
            assert line not in summary
    assert "No reviewable changes" not in summary


def numbered_reader(request: dict[str, Any]) -> str:
    """A model that reads the numbers the prompt prints: per file, a remark on its
    first non-blank added row and, where two added rows follow each other, a range
    over them; answered the messy way models answer (a draft in <think>, a fence, a
    trailing comma, a raw newline inside a string)."""
    text = request["messages"][1]["content"]
    comments, path = [], None
    rows: dict[str, list[tuple[int, str]]] = {}
    for line in text.split("\n"):
        if line.startswith("+++ b/"):
            path = line[6:]
        elif path is not None and (m := _ROW.match(line)):
            rows.setdefault(path, []).append((int(m[1]), m[2]))
    for path, added in rows.items():
        first = next((n, code) for n, code in added if code.strip())
        snippet = " ".join(first[1].split())[:40]
        comments.append(
            f'{{"path": "{path}", "line": {first[0]}, "severity": "medium", '
            f'"body": "Row {first[0]} reads `{snippet}`.\nCheck it."}}'
        )
        pairs = [(a, b) for (a, _), (b, _) in itertools.pairwise(added) if b == a + 1]
        if pairs:
            start, end = pairs[-1]
            comments.append(
                f'{{"path": "{path}", "start_line": {start}, "line": {end}, '
                f'"body": "Rows {start} to {end} change together.",}}'
            )
    files = ", ".join(rows)
    return (
        '<think>Draft: {"summary": "not this one", "comments": []}</think>\n'
        "```json\n"
        f'{{"summary": "Read {len(rows)} file(s): {files}.", '
        f'"comments": [{", ".join(comments)},]}}\n'
        "```"
    )


def _github_review(fake: FakeGitHubServer, number: int) -> dict[str, Any]:
    reviews = [r for r in fake.control.reviews() if r["pr"].endswith(f"#{number}")]
    return reviews[-1]


def _render_github(review: dict[str, Any]) -> str:
    rows = ["# GitHub review", "", f"event: {review.get('state')}", "", "## Body", ""]
    rows += [_unmarked(review["body"]), "", "## Inline comments", ""]
    for c in review["comments"]:
        where = (
            f"{c['path']} lines {c['start_line']}-{c['line']}"
            if c.get("start_line")
            else (f"{c['path']} line {c['line']}")
        )
        rows += [f"### {where} ({c.get('side')})", "", c["body"], ""]
    return "\n".join(rows).rstrip() + "\n"


def _render_gitlab(notes: list[dict[str, Any]]) -> str:
    rows = ["# GitLab review", ""]
    for n in notes:
        pos = n.get("position")
        if pos:
            span = pos.get("line_range")
            where = f"{pos['new_path']} line {pos['new_line']}"
            if span:
                where = (
                    f"{pos['new_path']} lines {span['start']['new_line']}-{span['end']['new_line']}"
                )
            rows += [f"## Thread on {where}", "", _unmarked(n["body"]), ""]
        else:
            rows += ["## Summary note", "", _unmarked(n["body"]), ""]
    return "\n".join(rows).rstrip() + "\n"


def _unmarked(body: str) -> str:
    """Hidden markers carry hashes of the run; a person reading the golden file does
    not need them, and they are checked by the sink tests."""
    return re.sub(r"<!-- reviewq:[^>]*-->\n*", "", body).strip()


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("REVIEWQ_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; see its diff with REVIEWQ_UPDATE_GOLDEN=1"


def _printed_lines(request: dict[str, Any]) -> set[tuple[str, int]]:
    found, path = set(), None
    for line in request["messages"][1]["content"].split("\n"):
        if line.startswith("+++ b/"):
            path = line[6:]
        elif path and (m := re.match(r"^[ +]\s*(\d+)\| ", line)):
            found.add((path, int(m[1])))
    return found


def test_a_real_diff_through_the_fake_github_matches_its_golden_review(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    files = parse_unified_diff(REAL_DIFF)
    with (
        serve_fake_github() as fake,
        deployment(
            redis,
            redis_url,
            unique,
            [numbered_reader],
            sink="forge",
            github_url=fake.url,
            github_token_env=GH_TOKEN_ENV,
            env={GH_TOKEN_ENV: fake.token},
        ) as dep,
    ):
        head = "600ede6be7d125d14812be3bbd7ef3e0b526a84e"
        fake.control.add_pr(
            "mangiucugna",
            "json_repair",
            207,
            head,
            files=files,
            title="Fix #207, respect multiple backslashes in strings",
            body="Respect multiple backslashes in strings when they have no additional meaning.",
        )
        ref = PullRequestRef(
            id="mangiucugna/json_repair#207",
            head_sha=head,
            owner="mangiucugna",
            repo="json_repair",
            number=207,
        )
        dep.review(ref, {"kind": "github"})
        review = _github_review(fake, 207)
        printed = set().union(*(_printed_lines(r) for r in dep.model.requests))
        request_text = dep.model.requests[0]["messages"][1]["content"]
        assert "> Title: Fix #207, respect multiple backslashes in strings" in request_text
        # every comment sits on a row whose number the prompt printed
        assert review["comments"] and all(
            (c["path"], c["line"]) in printed for c in review["comments"]
        )
        _golden("review_github_json_repair_600ede6.md", _render_github(review))

        # The same code reviewed again (a full review, as `reviewq enqueue --full` asks):
        # nothing is posted twice; the earlier findings are linked instead.
        second = "600ede6be7d125d14812be3bbd7ef3e0b526a84f"
        fake.control.add_pr("mangiucugna", "json_repair", 207, second, files=files)
        dep.review(ref.model_copy(update={"head_sha": second}), {"kind": "github", "full": True})
        again = _github_review(fake, 207)
        assert again["comments"] == []
        assert f"**Earlier findings that still apply ({len(review['comments'])})**" in again["body"]
        assert review["html_url"] in again["body"]


def test_a_real_diff_through_the_fake_gitlab_matches_its_golden_review(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    files = parse_unified_diff(REAL_DIFF)
    mr_files = [
        MrFile(old_path=f.previous_filename or f.filename, new_path=f.filename, diff=f.patch or "")
        for f in files
    ]
    with (
        serve_fake_gitlab() as fake,
        deployment(
            redis,
            redis_url,
            unique,
            [numbered_reader],
            sink="forge",
            gitlab_url=fake.url,
            gitlab_token_env=GL_TOKEN_ENV,
            env={GL_TOKEN_ENV: fake.token},
        ) as dep,
    ):
        project, head = "mangiucugna/json_repair", "600ede6be7d125d14812be3bbd7ef3e0b526a84e"
        fake.control.add_mr(project, 207, head, files=mr_files, title="Fix #207")
        ref = PullRequestRef(
            id=f"{project}!207",
            head_sha=head,
            forge="gitlab",
            owner="mangiucugna",
            repo="json_repair",
            number=207,
        )
        dep.review(ref, {"kind": "gitlab"})
        notes = fake.control.notes()
        printed = set().union(*(_printed_lines(r) for r in dep.model.requests))
        threads = [n["position"] for n in notes if n.get("position")]
        assert threads and all((p["new_path"], p["new_line"]) in printed for p in threads)
        assert any(p.get("line_range") for p in threads)
        assert "could not place" not in notes[-1]["body"]
        _golden("review_gitlab_json_repair_600ede6.md", _render_gitlab(notes))


@pytest.mark.parametrize("forge", ["github"])
def test_golden_files_are_readable_markdown(forge: str) -> None:
    """The golden files are for people: no JSON, no hidden markers, no raw answer."""
    for path in GOLDEN.glob("review_*_json_repair_600ede6.md"):
        text = path.read_text()
        assert "<!--" not in text and '"comments"' not in text and "<think>" not in text
        assert "```json" not in text
