"""Fast unit tests of reply parsing: the JSON repair, the key names, the YAML mending.

tests/test_model_answers.py judges whole answers end to end, through Redis and the
fake GitHub, so it is too slow for mutation testing (issue 21). These tests pin each
repair of `workers.review.repair` and each reading of `workers.review.answers` with
exact outputs, in milliseconds, so that mutmut can tell a changed branch from the
original. Real damaged answers come from tests/fixtures/model_answers (SOURCES.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.config.planning import PlanningConfig
from scheduler.state.refs import PullRequestRef
from workers.review.answers import (
    Extracted,
    Found,
    _lines,
    _mended,
    _number,
    _review,
    _scalars,
    _yaml,
    extract,
    strip_reasoning,
)
from workers.review.changes import ChangedFile
from workers.review.model import ReviewComment
from workers.review.plan import PlannedMessage, ReviewPlan, SkippedFile
from workers.review.planning import plan_review
from workers.review.repair import Decoded, loads_lenient
from workers.review.replies import (
    _BODY_CHARS,
    _COLLAPSE,
    Reply,
    _nothing_said,
    _stale_note,
    gather,
    parse_reply,
)

ANSWERS = Path(__file__).parent / "fixtures" / "model_answers" / "answers"


def _answer(name: str) -> str:
    return (ANSWERS / name).read_text(encoding="utf-8")


# --- repair.loads_lenient: each repair, the value it yields, and what it says of it ---


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": "x\ty"}', {"a": "x\ty"}),  # a literal tab: the loose decoder
        ('{"a": "x\ny"}', {"a": "x\ny"}),
        ("{'a': 'b'}", {"a": "b"}),
        ("{'k': \"v\"}", {"k": "v"}),
        ('{"a": [1, 2,], }', {"a": [1, 2]}),
        ('{"a": [1, 2 ,\n ] }', {"a": [1, 2]}),
        ('{"a": 1 // c\n}', {"a": 1}),
        ('{"a": 1 # c\n}', {"a": 1}),
        ('{"a": /* c */ 1}', {"a": 1}),
        ("{\u201ca\u201d: \u201cb\u201d}", {"a": "b"}),
        ("{\u2018a\u2019: \u2018b\u2019}", {"a": "b"}),
        ("{\u201da\u201d: 1}", {"a": 1}),
        ("{a: True, b: None, c: False}", {"a": True, "b": None, "c": False}),
        ("{a: true, b: null, c: false}", {"a": True, "b": None, "c": False}),
        ("{key: value}", {"key": "value"}),
        ('{"a": $x}', {"a": "$x"}),
        ('{"a": value\n}', {"a": "value"}),
        ('{"a": value\r\n}', {"a": "value"}),
        ('{"a": value \t,"b":1}', {"a": "value", "b": 1}),
        ('{"body": "use "x" here"}', {"body": 'use "x" here'}),
        ("{'a': 'it\\'s'}", {"a": "it's"}),
        ("{'a': 'q\\\"'}", {"a": 'q"'}),
        ("{'a': 'say \"hi\"'}", {"a": 'say "hi"'}),
        ("{'a': 'x\\q'}", {"a": "x\\q"}),
        ("{'a': 'x\\X'}", {"a": "x\\X"}),
        ("{'a': 'x\\n\\t\\u0041\\/'}", {"a": "x\n\tA/"}),
        ("{'a': 'x\\\\'}", {"a": "x\\"}),
        ("{'a-b': 1, c_d: 2}", {"a-b": 1, "c_d": 2}),
        ("{a: -1.5e3, b: 2}", {"a": -1500.0, "b": 2}),
        ("['a', 'b']", ["a", "b"]),
        ("{'a': {'b': [1, 'c',],},}", {"a": {"b": [1, "c"]}}),
    ],
)
def test_each_repair_yields_the_value_the_model_meant(text: str, value: object) -> None:
    decoded = loads_lenient(text)
    assert decoded == Decoded(value, repaired=True, truncated=False)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": true, "b": null}', {"a": True, "b": None}),
        ("[1, 2] trailing prose", [1, 2]),
        ('{"a": -1.5e3}', {"a": -1500.0}),
        ("{ }", {}),
        ('{"k": "a" , "b": "c"}', {"k": "a", "b": "c"}),
    ],
)
def test_valid_json_is_read_as_written_and_not_called_repaired(text: str, value: object) -> None:
    assert loads_lenient(text) == Decoded(value, repaired=False, truncated=False)


def test_decoding_starts_where_it_is_told() -> None:
    assert loads_lenient("note {'a': 1} end", 5) == Decoded({"a": 1}, repaired=True)
    assert loads_lenient('xx{"a": 1}', 2) == Decoded({"a": 1})
    assert loads_lenient("note {'a': 1}", 0) is None  # not at a bracket: nothing


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # the comments written in full are kept, never half of one
        (
            '{"comments": [{"path": "a.py", "line": 1, "body": "one"}, '
            '{"path": "b.py", "line": 2, "bo',
            {"comments": [{"path": "a.py", "line": 1, "body": "one"}]},
        ),
        (
            '{"comments": [{"path": "a.py", "body": "one"},\n  {"path": "b.py", "body": "tw',
            {"comments": [{"path": "a.py", "body": "one"}]},
        ),
        ('{"summary": "s", "comments": [', {"summary": "s"}),
        ('{"summary": "s", "comments": [{"path": "a.py"', {"summary": "s"}),
        # a quote then a comma ends a string, even where the model meant it as text
        ('{"body": "say "a", then"}', {"body": 'say "a'}),
        ('{"s": "a", "t": "b', {"s": "a"}),
        ('{"s": "a", "t": ', {"s": "a"}),
        ("[1, 2", [1, 2]),
        ("[1, 2, ", [1, 2]),
        ('{"a": [1, 2]', {"a": [1, 2]}),
        ('{"a": "b" // end', {"a": "b"}),
        ('{"a": 1 /* open', {"a": 1}),
        ('{"a": 1]}', {"a": 1}),
        ('{"a": v]', {"a": "v"}),  # a stray closer ends the readable text
        ('{"x": {"y": [1, {"z": 2', {"x": {"y": [1]}}),
        # outside an array every member is a safe point; inside one, only whole elements
        ('{"a": {"b": 1, "c": 2', {"a": {"b": 1, "c": 2}}),
        ('[{"a": 1}, {"a": 1, "b": 2', [{"a": 1}]),
    ],
)
def test_a_cut_off_answer_keeps_only_complete_values(text: str, value: object) -> None:
    assert loads_lenient(text) == Decoded(value, repaired=True, truncated=True)


@pytest.mark.parametrize(
    "text",
    [
        "x",
        "",
        '{"a": "unterminated',
        '{"a": 1, "b": {"c": 2, "d"',
        '{"a": hello world}',
        "{",
        "[",
        '{"a',
        "]",
        "{'a': 'b' c}",
        '{"a": x y',
        '[{"a": 1, "b": 2',
    ],
)
def test_text_with_nothing_complete_decodes_to_nothing(text: str) -> None:
    assert loads_lenient(text) is None


def test_a_quote_before_a_colon_ends_a_key_but_not_a_value() -> None:
    assert loads_lenient('{"a": "x": 1}') is None
    assert loads_lenient('{"k"y": 1}') == Decoded({'k"y': 1}, repaired=True)
    assert loads_lenient('{"a": "b" # note\n}') == Decoded({"a": "b"}, repaired=True)
    assert loads_lenient('{"a": "b" /* c */}') == Decoded({"a": "b"}, repaired=True)
    # what follows a quote is looked at only so far: 200 characters
    near = loads_lenient('{"a": "x"' + " " * 199 + 'y"}')
    assert near == Decoded({"a": 'x"' + " " * 199 + "y"}, repaired=True)
    far = loads_lenient('{"a": "x"' + " " * 200 + 'y"}')
    assert far == Decoded({"a": "x"}, repaired=True, truncated=True)


def test_an_escape_at_the_very_end_is_a_cut_string() -> None:
    assert loads_lenient("{'a': 1, 'b': 'x\\") == Decoded({"a": 1}, repaired=True, truncated=True)
    cut = Decoded({"a": 1}, repaired=True, truncated=True)
    assert loads_lenient("{'a': 1, 'b': 'x\\'") == cut  # the quote is escaped: still open


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("{'a': 1, // c\n'b': 2\n}", {"a": 1, "b": 2}),  # a comment ends at its own line
        ("{\n'a': 1 // c\n, 'b': 2}", {"a": 1, "b": 2}),
        ("{'a': '*/', /* c */ 'b': 1}", {"a": "*/", "b": 1}),
        ("{'a': 1, /* c */ 'b': 2 /* d */}", {"a": 1, "b": 2}),
        ("{'a': 1 /**/, 'b': 2}", {"a": 1, "b": 2}),
        ("{'a': 1, /*/ c */ 'b': 2}", {"a": 1, "b": 2}),
        ("{a: yes\n// note\n}", {"a": "yes"}),
        ("{a : 1}", {"a": 1}),
        ("{'a'X': 1}", {"a'X": 1}),  # a quote not before `:` is part of the key
        ("{'a': 'b'X'}", {"a": "b'X"}),
        ('{"a": X}', {"a": "X"}),
        ("[[1],'x']", [[1], "x"]),
    ],
)
def test_comments_quotes_and_closers_in_their_places(text: str, value: object) -> None:
    assert loads_lenient(text) == Decoded(value, repaired=True)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("{'a': 1, // x}", {"a": 1}),  # a comment never ended takes the closer with it
        ("[1, v X", [1]),  # a word in prose is not a value
        ("[1, @", [1]),
        ("[1, /* x", [1]),
    ],
)
def test_an_answer_ending_in_a_comment_or_prose_is_cut(text: str, value: object) -> None:
    assert loads_lenient(text) == Decoded(value, repaired=True, truncated=True)


def test_real_damaged_answers_are_read() -> None:
    control = loads_lenient(_answer("15-pr-agent-single-control-char.txt"))
    assert control == Decoded({"msg": "hel\x01lo"}, repaired=True)
    broken = loads_lenient(_answer("31-ragflow-issue-9740-broken-findings.txt"))
    assert broken is not None and broken.truncated and broken.repaired
    assert broken.value == {
        "title": "xxxxx",
        "summary": "xxxxx",
        "rating": 3.0,
        "rating_explanation": "xxxxx",
        "findings": [{"summary": "xxxx", "explanation": "xxxxx\u3002"}],
    }


# --- answers: reasoning blocks, key names, line ranges, YAML ---


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("<think>draft {}</think> answer ", "answer"),
        ("a<THINKING>x</thinking>b<reasoning>y\nz</reasoning>c", "abc"),
        ("<analysis>x</analysis>", ""),
        ("draft {} </think> the answer", "the answer"),
        ("one </think> two </reasoning> three", "three"),
        ("answer <think> never closed", "answer"),
        ("<think>a</think>b<think>c", "b"),
        ("<think>a</reasoning> b", "b"),
        ("plain", "plain"),
    ],
)
def test_reasoning_blocks_are_stripped(content: str, text: str) -> None:
    assert strip_reasoning(content) == text


def test_a_draft_in_a_think_block_is_never_the_review() -> None:
    draft = '{"summary": "draft", "comments": []}'
    final = '{"summary": "final", "comments": [{"path": "a.py", "line": 3, "body": "b"}]}'
    found = extract(f"<think>{draft}</think>\n{final}")
    assert found == Extracted("final", (Found("a.py", 3, "b"),), usable=True)


@pytest.mark.parametrize(
    ("item", "found"),
    [
        ({"fileName": "a.py", "details": "d"}, Found("a.py", None, "d")),
        ({"file_name": " a.py ", "lineNumber": "7", "reviewComment": "r"}, Found("a.py", 7, "r")),
        ({"relevant file": "a.py", "issue_content": "i"}, Found("a.py", None, "i")),
        ({"relevant_file": "a.py", "suggestion_content": "s"}, Found("a.py", None, "s")),
        ({"path": "a.py", "title": "T", "body": "b"}, Found("a.py", None, "**T**: b")),
        ({"path": "a.py", "title": "only a title"}, Found("a.py", None, "only a title")),
        ({"path": "a.py", "severity": "high", "body": "b"}, Found("a.py", None, "**[high]**: b")),
        (
            {"path": "a.py", "priority": 2, "body": "b", "topic": "T"},
            Found("a.py", None, "**[2] T**: b"),
        ),
        ({"path": "a.py", "severity": ["x"], "body": "b"}, Found("a.py", None, "b")),
        ({"path": "a.py", "body": ["one", " ", 3, "two "]}, Found("a.py", None, "- one\n- two")),
        ({"path": "", "file": "f.py", "body": "b"}, Found("f.py", None, "b")),
        ({"path": "a.py", "body": [], "comment": "c"}, Found("a.py", None, "c")),
        ({"path": "a.py", "line": "3-5", "body": "b"}, Found("a.py", 5, "b", start_line=3)),
        ({"path": "a.py", "body": "b", "code": "\nX=1\n"}, Found("a.py", None, "b", code="X=1")),
        ({"path": "a.py", "body": {}, "comment": "c"}, Found("a.py", None, "c")),
        (
            {"path": "a.py", "line": 4, "body": "b", "code": "\n  x = 1\n"},
            Found("a.py", 4, "b", code="  x = 1"),
        ),
        ({"path": "a.py", "body": "b", "existing_code": " \n "}, Found("a.py", None, "b")),
        ({"path": "a.py", "body": "b", "relevant line": 5}, Found("a.py", None, "b")),
    ],
)
def test_a_comment_under_the_key_names_models_use(item: dict[str, object], found: Found) -> None:
    assert extract(str(item).replace("'", '"')) == Extracted("", (found,), usable=True)


def test_items_without_a_body_are_dropped() -> None:
    content = '{"comments": [{"path": "a.py", "line": 1}, "text", {"path": 3, "body": "k"}]}'
    assert extract(content) == Extracted("", (Found("", None, "k"),), usable=True)


@pytest.mark.parametrize(
    ("item", "lines"),
    [
        ({"line": 12}, (None, 12)),
        ({"line": "12-15"}, (12, 15)),
        ({"line": "L12-L15"}, (12, 15)),
        ({"line": "1-3"}, (1, 3)),
        ({"line": "0-3"}, (None, 3)),
        ({"line": " 12 \u2013 15 "}, (12, 15)),
        ({"line": "12:15"}, (12, 15)),
        ({"lines": "12 to 15"}, (12, 15)),
        ({"line_range": "12..15"}, (12, 15)),
        ({"lines": [12, 13, 15]}, (12, 15)),
        ({"lines": [12]}, (None, 12)),
        ({"start_line": 12, "end_line": 15}, (12, 15)),
        ({"start_line": 12}, (None, 12)),
        ({"start_line": 15, "end_line": 12}, (None, 12)),
        ({"start_line": 12, "end_line": 12}, (None, 12)),
        ({"line": "15-12"}, (None, 12)),
        ({"line": "L7"}, (None, 7)),
        ({"line": 7.0}, (None, 7)),
        ({"line": 7.5}, (None, None)),
        ({"line": 0}, (None, None)),
        ({"line": -3}, (None, None)),
        ({"line": True}, (None, None)),
        ({"line": "seven"}, (None, None)),
        ({"line": "1-2-3"}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_line_ranges(item: dict[str, object], lines: tuple[int | None, int | None]) -> None:
    assert _lines(item) == lines


def test_numbers() -> None:
    values = ("1", " L2 ", 3.0, 4, 0, "0", "", None, "x1", "X5")
    assert [_number(v) for v in values] == [1, 2, 3, 4] + [None] * 6


@pytest.mark.parametrize(
    ("value", "review"),
    [
        ({"summary": "s"}, ("s", ())),
        ({"summary": ["a", " b ", 1, " "]}, ("- a\n- b", ())),
        ({"summary": {"nested": "x"}}, None),
        ({"comments": []}, ("", ())),
        ({"comments": [1, 2]}, None),
        ({"x": {"summary": "deeper"}, "comments": []}, ("", ())),  # this level answers
        ({"summary": "s", "tags": [{"body": "x"}]}, ("s", ())),  # not a list of comments
        (
            {"comments": [{"body": "a"}], "findings": [{"body": "b"}]},
            ("", (Found("", None, "a"), Found("", None, "b"))),
        ),
        ({"summary": "", "findings": [{"body": "b"}]}, ("", (Found("", None, "b"),))),
        ({"path": "a.py", "body": "b"}, ("", (Found("a.py", None, "b"),))),
        ({"body": "b"}, None),  # a lone comment without a path is not a review
        ({"data": {"review": {"summary": "deep"}}}, ("deep", ())),
        ({"data": {"x": {"path": "a.py", "body": "b"}}}, None),
        ({"a": {"b": {"c": {"d": {"summary": "4 down"}}}}}, ("4 down", ())),
        ({"a": {"b": {"c": {"d": {"e": {"summary": "5 down"}}}}}}, None),
        ({"data": []}, ("", ())),
        ([], None),
        ([{"path": "a.py", "body": "b"}], ("", (Found("a.py", None, "b"),))),
        ("text", None),
        (3, None),
    ],
)
def test_what_counts_as_a_review(value: object, review: object) -> None:
    assert _review(value) == review


def test_the_first_candidate_that_is_a_review_wins() -> None:
    content = 'Given {"x": 1} and [1] here:\n```json\n{"summary": "fenced"}\n```\n{"summary": "no"}'
    assert extract(content) == Extracted("fenced", (), usable=True)
    assert extract("```\n{'summary': 'open fence'}") == Extracted(
        "open fence", (), usable=True, repaired=True
    )


def test_candidates_are_capped() -> None:
    content = "[x] " * 100 + '{"summary": "too far"}'
    assert extract(content) == Extracted("", (), usable=False)
    content = "[x] " * 99 + '{"summary": "just in"}'
    assert extract(content) == Extracted("just in", (), usable=True)


def test_the_review_as_one_json_string_is_decoded_once_more() -> None:
    found = extract(_answer("30-kaizen-issue-37-json-as-string.txt"))
    assert found.usable and [c.body for c in found.comments] == [
        "**Code Quality**: Consider consistent formatting for badges",
        "**Documentation**: Add descriptions to the badges",
    ]
    assert extract('"just a sentence"') == Extracted("", (), usable=False)
    assert extract('"never closed') == Extracted("", (), usable=False)
    assert extract('"summary: fine"') == Extracted("fine", (), usable=True, repaired=True)


def test_a_truncated_answer_says_so() -> None:
    found = extract('{"summary": "s", "comments": [{"path": "a.py", "body": "one"}, {"pa')
    assert found == Extracted(
        "s", (Found("a.py", None, "one"),), usable=True, truncated=True, repaired=True
    )


# --- answers: YAML, as written and as mended ---


def test_yaml_answers_are_read() -> None:
    content = "summary: ok\ncomments:\n  - path: a.py\n    line: 3\n    body: fix it\n"
    assert extract(content) == Extracted("ok", (Found("a.py", 3, "fix it"),), True, repaired=True)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1]\nb: *x",
        "- *ref",
        "a: [*x]",
        "no colon at all",
        "the ratio 3:1 is fine",
    ],
)
def test_yaml_with_aliases_or_no_structure_is_refused(text: str) -> None:
    assert _yaml(text) is None


def test_yaml_values_are_mappings_or_lists() -> None:
    assert _yaml("key: value") == {"key": "value"}
    assert _yaml("- a: 1") == [{"a": 1}]
    assert _yaml("word:") == {"word": None}
    assert _yaml("a: b: c") == {"a": "b: c"}  # only once its scalars are blocks
    assert _yaml("a: b*c&d") == {"a": "b*c&d"}  # not an anchor: no space before it
    assert _yaml("a: b *c") is None
    assert _yaml("- a list: of: one") == [{"a list": "of: one"}]


def test_mending_cuts_prose_fences_wrappers_tabs_and_plus_marks() -> None:
    text = "Sure, here it is.\r\nsummary: s\r\n```\r\nafter"
    assert _mended(text) == "summary: s"
    assert _mended("{\nreview:\n  - a: 1\n}") == "review:\n  - a: 1"
    assert _mended("- item: 1\n  }") == "- item: 1"
    assert _mended("a:\n\tb: 1\n\t\tc: 2") == "a:\n    b: 1\n        c: 2"
    assert _mended("a: |\n+  x\n +y") == "a: |\n   x\n +y"
    assert _mended("prose only") == "prose only"
    assert _mended("x\nkey:\ny") == "key:\ny"
    assert _mended("x\n- key: v") == "- key: v"
    assert _mended("key name: v") == "key name: v"
    assert _mended("x:y\nk: v") == "k: v"
    assert _mended("") == ""


def test_plain_values_become_block_scalars() -> None:
    assert _scalars("a: b: c") == "a: |-\n  b: c"
    assert _scalars("- relevant line: x = 1 # no") == "- relevant line: |-\n    x = 1 # no"
    assert _scalars("  k: v") == "  k: |-\n    v"
    kept = ["a: |", "a: >", "a: 'q'", 'a: "q"', "a: [1]", "a: {b: 1}", "a: &x", "a: *x", "a: !t"]
    assert [_scalars(line) for line in kept] == kept
    assert _scalars("a:b") == "a:b"
    assert _scalars("x: 1\ny: 2") == "x: |-\n  1\ny: |-\n  2"


@pytest.mark.parametrize(
    ("name", "comments"),
    [
        (
            "10-pr-agent-tab-indent-yaml.txt",
            (
                Found("src/index.ts", None, "best practice"),
                Found("src/index2.ts", None, "enhancement"),
            ),
        ),
        (
            "11-pr-agent-leading-plus-mark-code.txt",
            (
                Found(
                    "src/index.ts", None, "best practice", code="var router = createBrowserRouter(["
                ),
            ),
        ),
    ],
)
def test_real_pr_agent_yaml_is_mended(name: str, comments: tuple[Found, ...]) -> None:
    assert extract(_answer(name)) == Extracted("", comments, usable=True, repaired=True)


# --- replies: the body when nothing was said ---

REF = PullRequestRef(id="o/r#1", head_sha="0123456789abcdef", owner="o", repo="r", number=1)
ONE = ReviewPlan(
    messages=(PlannedMessage(index=0, files=("a.py",), text="", tokens=1),), skipped=()
)
NONE = ReviewPlan(messages=(), skipped=())


def test_the_body_when_no_section_has_anything() -> None:
    comment = ReviewComment(path="a.py", line=1, body="b")
    reply = {0: Reply(summary="", comments=())}
    assert _nothing_said(ONE, reply, [comment]) == "See the line comments."
    assert _nothing_said(ONE, reply, []) == "No problems found in the reviewed changes."
    assert _nothing_said(NONE, {}, []) == "No reviewable changes."
    assert _nothing_said(ONE, {}, []) == "Nothing was reviewed."
    assert gather(REF, ONE, reply, {}).summary == "No problems found in the reviewed changes."


def test_the_stale_note_names_the_commit() -> None:
    assert _stale_note(REF) == (
        "> **Stale.** This review is of commit 0123456789ab; the pull request has "
        "moved on since, so some comments may point at code that changed."
    )


# --- replies: which line a comment is placed on ---

# New side: 1 a, 2 `X = 1`, 3 blank, 4 b; 6 ctx6, 7 new, 8 ctx8 (line 5 is not shown).
XCODE = "@@ -1,2 +1,4 @@\n a\n+X = 1\n+\n b\n@@ -3,2 +6,3 @@\n ctx6\n-old\n+new\n ctx8"
TWICE = "@@ -0,0 +1,2 @@\n+same\n+same"


def _placed(comment: dict[str, object], kind: str = "diff") -> Reply:
    files = [
        ChangedFile(filename="Xcode.py", additions=3, deletions=1, changes=4, patch=XCODE),
        ChangedFile(filename="LINUX", status="added", additions=2, changes=2, patch=TWICE),
    ]
    message = plan_review(files, PlanningConfig()).messages[0]
    if kind != "diff":
        message = message.model_copy(update={"kind": kind})
    return parse_reply(json.dumps({"summary": "s", "comments": [comment]}), message)


@pytest.mark.parametrize(
    ("comment", "line", "start"),
    [
        ({"path": "Xcode.py", "code": "new"}, 7, None),  # the one shown line with that code
        ({"path": "Xcode.py", "code": "X = 1"}, 2, None),
        ({"path": "Xcode.py", "code": "+ X = 1"}, 2, None),  # a diff's `+` left on
        ({"path": "Xcode.py", "line": 4, "code": "not there"}, 4, None),  # a number wins
        ({"path": "Xcode.py", "line": "6-8"}, 8, 6),
        ({"path": "Xcode.py", "line": "4-6"}, 6, None),  # line 5 was not shown
        ({"path": "LINUX", "line": "1-2"}, 2, 1),
        ({"path": "LINUX:", "line": 1}, 1, None),  # as YAML answers leave a path
        ({"path": "/Xcode.py", "line": 1}, 1, None),
    ],
)
def test_a_comment_is_placed_on_the_shown_line_it_names(
    comment: dict[str, object], line: int, start: int | None
) -> None:
    path = str(comment["path"]).strip("/:")
    assert _placed({**comment, "body": "b"}).comments == (
        ReviewComment(path=path, line=line, body="b", start_line=start),
    )


@pytest.mark.parametrize(
    "comment",
    [
        {"path": "LINUX", "code": "same"},  # two lines hold it: no guess
        {"path": "Xcode.py", "code": "+"},  # nothing quoted
        {"path": "Xcode.py", "line": 5},  # not shown
        {"path": "Xcode.py", "code": "absent"},
    ],
)
def test_a_comment_is_never_placed_on_a_guessed_line(comment: dict[str, object]) -> None:
    reply = _placed({**comment, "body": "b"})
    assert reply.comments == () and len(reply.unanchored) == 1


def test_a_summary_message_anchors_nothing_whatever_its_text() -> None:
    reply = _placed({"path": "Xcode.py", "line": 2, "body": "b"}, kind="summary")
    assert reply.comments == () and reply.unanchored == ("`Xcode.py:2`: b",)


# --- replies: the review body's sections, exactly ---

TWO = ReviewPlan(
    messages=(
        PlannedMessage(index=0, files=("a.py",), text="", tokens=1),
        PlannedMessage(index=1, files=("b.py",), text="", tokens=1),
    ),
    skipped=(),
)
SUFFIX = "\n\n… (review body truncated)"


def test_sections_are_joined_and_short_lists_are_listed_whole() -> None:
    plan = ONE.model_copy(update={"skipped": (SkippedFile(path="yarn.lock", reason="lockfile"),)})
    body = gather(REF, plan, {0: Reply(summary="Fine.", comments=())}, {}).summary
    assert body == "Fine.\n\n**Skipped (1)**\n\n- `yarn.lock`: lockfile"


@pytest.mark.parametrize(("count", "folded"), [(_COLLAPSE, False), (_COLLAPSE + 1, True)])
def test_lists_fold_only_when_longer_than_the_collapse_limit(count: int, folded: bool) -> None:
    skipped = tuple(SkippedFile(path=f"v{i}.go", reason="vendored") for i in range(count))
    body = gather(REF, NONE.model_copy(update={"skipped": skipped}), {}, {}).summary
    assert ("<details>" in body) is folded
    failed = {i: "timed out" for i in range(count)}
    many = ReviewPlan(messages=(), skipped=())
    assert "<details>" not in gather(REF, many, {}, failed).summary  # never folded


def test_one_comment_left_out_is_said() -> None:
    comments = tuple(ReviewComment(path="a.py", line=n, body="b") for n in (1, 2))
    review = gather(REF, ONE, {0: Reply(summary="s", comments=comments)}, {}, max_comments=1)
    assert "> **1 more line comment(s) not posted.** A review carries at most 1;" in review.summary


def test_cut_answers_are_named_by_what_they_covered() -> None:
    cut = {i: Reply(summary="", comments=(), truncated=True) for i in (0, 1)}
    body = gather(REF, TWO, cut, {}).summary
    assert "The model's answer for `a.py`, `b.py` stopped at its length limit" in body
    body = gather(REF, NONE, cut, {}).summary  # a plan stored without its messages
    assert "The model's answer for message 1, message 2 stopped" in body


def test_one_summary_of_a_two_message_plan_is_labelled() -> None:
    body = gather(REF, TWO, {0: Reply(summary="s", comments=())}, {}).summary
    assert body.startswith("- **`a.py`**: s\n\n")


def test_comments_without_a_summary_point_at_the_line_comments() -> None:
    reply = Reply(summary="", comments=(ReviewComment(path="a.py", line=1, body="b"),))
    assert gather(REF, ONE, {0: reply}, {}).summary == "See the line comments."


def test_summarised_data_files_are_named() -> None:
    data = (SkippedFile(path="data.csv", reason="data file"),)
    body = gather(REF, NONE.model_copy(update={"summarised_data": data}), {}, {}).summary
    assert body == "**Only summarised (1)**\n\n- `data.csv`: data file"


def test_a_body_at_the_limit_is_kept_and_one_over_is_cut() -> None:
    def body(pad: int) -> str:
        skipped = tuple(SkippedFile(path=f"p{i}", reason="r" * 300) for i in range(150))
        last = SkippedFile(path="last", reason="r" * pad)
        plan = NONE.model_copy(update={"skipped": (*skipped, last)})
        return gather(REF, plan, {}, {}).summary

    pad = _BODY_CHARS - len(body(0))
    assert len(body(pad)) == _BODY_CHARS and not body(pad).endswith(SUFFIX)
    over = body(pad + 1)
    assert over.endswith(SUFFIX) and len(over) == _BODY_CHARS - 40 + len(SUFFIX)
