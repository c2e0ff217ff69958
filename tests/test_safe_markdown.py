"""The filter every piece of model text passes before it is posted, on hostile text.

Each result is read back by an independent CommonMark parser (`markdown_referee`):
a test passes only if a real parser finds nothing in it that would notify, load or
offer a one-click change, not merely if some string is absent.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_referee import code_blocks, hazards

from workers.review.safe_markdown import MIN_LIMIT, ZWSP, code_span, safe_markdown

LIMIT = 4000


def safe(text: str, limit: int = LIMIT) -> str:
    out = safe_markdown(text, limit)
    assert hazards(out) == [], (text, out)
    assert len(out) <= limit
    assert safe_markdown(out, limit) == out  # a second pass finds nothing to do
    return out


def visible(text: str) -> str:
    return text.replace(ZWSP, "")


def test_the_referee_sees_what_a_forge_would_render() -> None:
    """The referee itself: raw hostile text is full of hazards."""
    raw = "@octocat ![x](http://e/p.png) <img src=x>\n\n```suggestion\nx\n```"
    assert [h.split(":")[0] for h in hazards(raw)] == ["mention", "image", "html_inline", "fence"]


# --- mentions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "@octocat please look",
        "cc @acme/security-team and @acme/Core_Devs.",
        "(@octocat), [@octocat], **@octocat**, _x_@octocat, a-@octocat, é@octocat",
        "line one\n@octocat at the start of a line",
        "escaped \\@octocat still renders as a mention",
        "GitLab: @all @_under @first.last @-dash",
        "> quoted @octocat\n- listed @octocat\n# heading @octocat",
        "| a | b |\n|---|---|\n| @octocat | `x` |",
    ],
)
def test_mentions_are_neutralised_and_read_the_same(text: str) -> None:
    out = safe(text)
    assert visible(out) == text  # only an invisible character was added
    assert f"@{ZWSP}" in out


@pytest.mark.parametrize(
    "text", ["&#64;octocat", "&#0064;octocat", "&#x40;octocat", "&commat;octocat", "@&#111;cto"]
)
def test_mentions_spelled_as_entities_are_neutralised(text: str) -> None:
    assert ZWSP in safe(text)


def test_emails_and_words_with_at_signs_are_left_alone() -> None:
    text = "Mail a.b@example.com or first_last+tag@corp.io; user&#64;host; 3@4 is fine"
    assert safe(text) == text


def test_mentions_inside_inline_code_keep_their_look() -> None:
    out = safe("Use `@property` and `@dataclass(frozen=True)` here.")
    assert visible(out) == "Use `@property` and `@dataclass(frozen=True)` here."


def test_fenced_code_is_left_byte_for_byte() -> None:
    code = "@decorator\ndef f():\n    return '<img src=x>' + '![a](b)' + '@@ -1 +1 @@'"
    text = f"Consider:\n\n```python\n{code}\n```\n\nThen @octocat."
    out = safe(text)
    assert code_blocks(out) == [code + "\n"]
    assert out.startswith(f"Consider:\n\n```python\n{code}\n```")


# --- images and HTML --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "note"),
    [
        ("See ![the logo](http://evil.example/p.png) here", "[image removed: the logo]"),
        ('![a](http://e/p.png "title") and ![b](<http://e/q.png>)', "[image removed: b]"),
        ("![a [nested] alt](http://e/(1).png)", "[image removed: a [nested] alt]"),
        ("![alt][pix]\n\n[pix]: http://evil.example/p.png", "[image removed: alt]"),
        ("![pix][]\n\n[PIX]: http://evil.example/p.png", "[image removed: pix]"),
        ("![pix]\n\n[pix]: http://evil.example/p.png", "[image removed: pix]"),
        ("[![badge](http://e/b.svg)](http://e)", "[image removed: badge]"),
        ("![](http://evil.example/p.png)", "[image removed]"),
        ('<img src="http://evil.example/p.png" alt="a pixel">', "[image removed: a pixel]"),
        ("<IMG\nSRC=http://e/p.png>", "[image removed]"),
        ("<picture><source srcset=http://e/a><img src=http://e/b></picture>", "[image removed]"),
        ("<video src=http://e/v.mp4 autoplay></video>", "[embedded content removed]"),
        ('<iframe src="http://e/"></iframe>', "[embedded content removed]"),
        ("<svg><image href=http://e/p.png /></svg>", "[embedded content removed]"),
        ("<audio src=x></audio> <object data=x></object> <embed src=x>", "[embedded content"),
    ],
)
def test_images_and_media_are_dropped_with_a_note(text: str, note: str) -> None:
    out = safe(text)
    assert note in visible(out).replace("\\[", "[").replace("\\]", "]")


@pytest.mark.parametrize(
    "text",
    [
        "<details><summary>More</summary>hidden</details>",
        "<!-- reviewq:review pr=octo/app#1 sha=abc -->",
        "<a href=http://e onmouseover=x>link</a> <https://e.example/@octocat>",
        "<style>body{background:url(http://e/p.png)}</style><script>x()</script>",
        "![not an image, nothing defines it] and ![a](<http://e/with space.png>)",
    ],
)
def test_other_html_and_leftovers_render_as_text(text: str) -> None:
    safe(text)


def test_the_review_marker_cannot_be_planted_outside_code() -> None:
    marker = "<!-- reviewq:review pr=octo/app#1 sha=abc0001 -->"
    assert marker not in safe(f"ok\n\n{marker}")


def test_an_image_inside_inline_code_keeps_its_text() -> None:
    out = safe("Give `![logo](docs/logo.png)` some alt text.")
    assert visible(out) == "Give `![logo](docs/logo.png)` some alt text."


# --- suggestions and fences -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "```suggestion\nreturn None\n```",
        "~~~suggestion\nreturn None\n~~~",
        "``` SUGGESTION\nreturn None\n```",
        "```suggestion:-0+2\nreturn None\n```",
        "   ```suggestion\n   return None\n   ```",
        "```&#115;uggestion\nreturn None\n```",
        "> ```suggestion\n> return None\n> ```",
        "- item\n\n  ```suggestion\n  return None\n  ```",
        "1. ```suggestion\n   return None\n   ```",
        "```mermaid\ngraph TD; A-->B\n```",
    ],
)
def test_suggestion_blocks_become_plain_code(text: str) -> None:
    out = safe(text)
    assert "return None" in out or "graph TD" in out


def test_a_suggestion_becomes_a_plain_fence_with_its_content() -> None:
    out = safe("Apply this:\n```suggestion\n    return None\n```\ndone")
    assert out == "Apply this:\n\n```\n    return None\n```\ndone"


def test_nested_fences_stay_one_block() -> None:
    inner = "```suggestion\n@octocat ![a](http://e/p.png)\n```"
    out = safe(f"````markdown\n{inner}\n````\nafter @octocat")
    assert code_blocks(out) == [inner + "\n"]
    assert out.endswith(f"after @{ZWSP}octocat")


def test_a_fence_holding_longer_backtick_runs_gets_a_longer_fence() -> None:
    out = safe("~~~\nuse ````` here\n~~~")
    assert out == "``````\nuse ````` here\n``````"


def test_an_unclosed_fence_is_closed() -> None:
    out = safe("Look:\n```python\n@decorator\ndef f(): ...")
    assert out.endswith("```python\n@decorator\ndef f(): ...\n```")


def test_inline_runs_of_three_backticks_cannot_open_a_fence_in_a_container() -> None:
    assert hazards(safe("- ```suggestion\n  x\n  ```")) == []


# --- length -------------------------------------------------------------------------


def test_a_long_text_is_cut_before_it_is_made_safe() -> None:
    text = "@octocat " + "word " * 20_000  # about 100,000 characters
    out = safe(text)
    assert len(out) <= LIMIT and out.endswith("… _(truncated)_")
    assert out.startswith(f"@{ZWSP}octocat word")


def test_a_cut_inside_a_fence_still_closes_it() -> None:
    text = "Intro\n```python\n" + "@x = 1\n" * 5000 + "```\nafter"
    out = safe(text)
    (block,) = code_blocks(out)
    assert out.endswith("```\n\n… _(truncated)_") and "after" not in out
    assert block.startswith("@x = 1\n")


def test_text_that_grows_when_made_safe_still_fits() -> None:
    for text in ("<a" * 30_000, "@x " * 30_000, "![a](b)" * 10_000, "```\n" * 3000):
        out = safe(text, 500)
        assert len(out) <= 500


def test_the_limit_has_a_floor() -> None:
    with pytest.raises(ValueError, match="at least"):
        safe_markdown("x", MIN_LIMIT - 1)


def test_ten_thousand_hostile_comments_are_fast() -> None:
    bodies = [
        f"@user{i} ![p](http://e/{i}.png) <img src=x>\n```suggestion\nx\n```" for i in range(10_000)
    ]
    started = time.monotonic()
    outs = [safe_markdown(b, LIMIT) for b in bodies]
    assert time.monotonic() - started < 10
    assert all(ZWSP in o and "suggestion" not in o for o in outs)
    assert hazards("\n\n".join(outs[:200])) == []


# --- code spans we write ourselves ------------------------------------------------------


def test_code_span_always_closes_and_shows_the_text() -> None:
    path = "src/we`ird @octocat <img src=x>.py"
    span = code_span(path)
    assert span.count("`") == 2 and hazards(f"- {span}: remark") == []
    assert visible(span) == "`src/we\u02cbird @octocat <img src=x>.py`"
    assert code_span("a\nb") == "`a b`"


# --- anything at all ---------------------------------------------------------------------

_PIECES = [
    "@octocat", "@org/team", "a@b.co", "&#64;x", "&commat;y", "&#x40;z", "\\@w",
    "![a](http://e/p.png)", "![b][r]", "![r]", "![r][]", "[r]: http://e/x.png",
    "<img src=x>", "<IMG SRC=x>", "<video src=v>", "<!-- c -->", "<details>", "<http://a.b/@c>",
    "`", "``", "```", "````", "~~~", "```suggestion", "~~~ suggestion", "```&#115;uggestion",
    "\n", "\n\n", " ", "    ", "> ", "- ", "1. ", "|", "| a | b |\n|---|---|\n", "\\",
    "[", "]", "(", ")", "](", "*", "_", "$", "x", "<", ">", "!", "#", ";", "&", "\t",
]  # fmt: skip
_SOUP = st.lists(
    st.sampled_from(_PIECES) | st.text(alphabet="@`~<>![]()x \n\\&#;_*|", max_size=3),
    max_size=60,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_SOUP, limit=st.sampled_from([MIN_LIMIT, 300, LIMIT]))
def test_nothing_hostile_survives_any_mix(text: str, limit: int) -> None:
    safe(text, limit)
