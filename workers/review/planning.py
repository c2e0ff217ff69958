"""Turning a PR's changed files into as few provider messages as its diff needs.

Flat-rate plans meter requests, not tokens: a message carrying twenty small diffs costs
what a one-line one does. So planning skips what is not worth a request
(`workers.review.skiprules`), packs the rest first-fit under the model's token budget, splits
a diff too big for one message at hunk (then line) boundaries with valid hunk headers,
and on a very large PR reviews only the riskiest files in full. It is pure and
deterministic: the same files and config give the same plan, so a retried job sends
exactly the messages it planned. The plan's data is `workers.review.plan`; replies are
read back by `workers.review.replies`.
"""

from __future__ import annotations

import datetime as dt
import math
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scheduler.config.planning import PlanningConfig
from scheduler.quota.plans import Account
from workers.providers.client import CallBound, request_cost
from workers.review.changes import ChangedFile
from workers.review.diff import gutter_width, numbered_view
from workers.review.gitattributes import GitAttributes
from workers.review.model import DEFAULT_MAX_COMMENTS
from workers.review.plan import PlannedMessage, ReviewPlan, SkippedFile
from workers.review.prompt import (
    PROMPT_VERSION,
    PullContext,
    build_request,
    prompt_text,
    user_text,
)
from workers.review.skiprules import degraded_note, headline, rank_by_risk, triage

__all__ = [
    "DIFF_SYSTEM_PROMPT",
    "SUMMARY_SYSTEM_PROMPT",
    "PullContext",
    "build_request",
    "estimate",
    "estimate_tokens",
    "plan_review",
]

# The system prompts at the default comment cap; a plan renders its own cap
# (`PullContext.max_comments`). The wording is `workers/review/prompts/review-v1.md`.
DIFF_SYSTEM_PROMPT = prompt_text("diff", max_comments=DEFAULT_MAX_COMMENTS)
SUMMARY_SYSTEM_PROMPT = prompt_text("summary", max_comments=DEFAULT_MAX_COMMENTS)
_DIFF_INTRO = "Pull request diff to review (unified format):\n\n"
_SUMMARY_INTRO = "Files of this pull request that are only summarised (path, status, size):\n"
# With less room than this for the user text a message holds a few lines at best, and
# a summary headline (`HEADLINE_CHARS` at most) might not fit at all.
_MIN_ROOM_CHARS = 512
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")


def estimate_tokens(text: str, chars_per_token: float = 4.0) -> int:
    """ceil(chars / chars_per_token): at 4 it is the provider simulator's own count."""
    return math.ceil(len(text) / chars_per_token)


@dataclass(frozen=True, slots=True)
class _Hunk:
    """One hunk; `old`/`new` number the first line it covers on each side."""

    old: int
    new: int
    section: str
    lines: tuple[str, ...]

    def render(self) -> str:
        """Header lengths counted from the body, so they always agree with it; an empty
        side names the line before, as git does (`@@ -0,0 +1,3 @@`)."""
        olen = sum(1 for line in self.lines if line[:1] in (" ", "", "-"))
        nlen = sum(1 for line in self.lines if line[:1] in (" ", "", "+"))
        head = f"@@ -{self.old - (olen == 0)},{olen} +{self.new - (nlen == 0)},{nlen} @@"
        return "\n".join((f"{head} {self.section}" if self.section else head, *self.lines))


def _patch_hunks(patch: str) -> list[_Hunk]:
    """Hunks of a GitHub-style patch. Only a hunk header can start with `@@` there, so
    hunks are cut at headers and their lengths recounted, whatever a header claims."""
    lines = patch.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    heads: list[tuple[int, int, str]] = []
    bodies: list[list[str]] = []
    for line in lines:
        if match := _HUNK_HEADER.match(line):
            old_len, new_len = int(match[2] or 1), int(match[4] or 1)
            old, new = int(match[1]) + (old_len == 0), int(match[3]) + (new_len == 0)
            heads.append((old, new, match[5].strip()))
            bodies.append([])
        elif bodies and line[:1] in (" ", "", "+", "-", "\\"):
            bodies[-1].append(line)
    return [_Hunk(o, n, s, tuple(b)) for (o, n, s), b in zip(heads, bodies, strict=True) if b]


def _split_hunk(hunk: _Hunk, room: int) -> list[_Hunk]:
    """Cut a hunk too big for `room` characters at line boundaries.

    Each piece starts where the previous one stopped on both sides, so new-side line
    numbers stay exact. A `\\ No newline` marker stays with its line; one line longer
    than `room` becomes a piece of its own, the only way a piece exceeds `room`.
    """
    big = max(hunk.old, hunk.new) + len(hunk.lines)  # bounds every number in a header
    head_max = len(f"@@ -{big},{big} +{big},{big} @@ {hunk.section}")
    gutter = gutter_width(big, 1)  # no number in the piece is wider than `big`
    units: list[list[str]] = []  # a line with the markers that follow it
    for line in hunk.lines:
        if line[:1] == "\\" and units:
            units[-1].append(line)
        else:
            units.append([line])
    pieces: list[_Hunk] = []
    current: list[str] = []
    old, new, start, size = hunk.old, hunk.new, (hunk.old, hunk.new), head_max
    for unit in units:
        cost = sum(len(line) + 1 + gutter for line in unit)
        if current and size + cost > room:
            pieces.append(_Hunk(*start, hunk.section, tuple(current)))
            start, current, size = (old, new), [], head_max
        current += unit
        size += cost
        old += sum(line[:1] in (" ", "", "-") for line in unit)
        new += sum(line[:1] in (" ", "", "+") for line in unit)
    pieces.append(_Hunk(*start, hunk.section, tuple(current)))
    return pieces


def _file_header(file: ChangedFile) -> str:
    """`--- a/old` / `+++ b/new`: what git writes, and what the simulator looks for."""
    old = "/dev/null" if file.status == "added" else f"a/{file.previous_filename or file.filename}"
    return f"--- {old}\n+++ b/{file.filename}\n"


def _part_intro(path: str, k: int, n: int) -> str:
    return (
        f"Part {k} of {n} of the diff of {path}; the other parts are reviewed in separate "
        f"messages.\n\n{_DIFF_INTRO}"
    )


@dataclass(slots=True)
class _Bin:
    """A message being filled: its sections, each ending with a newline."""

    files: list[str]
    sections: list[str]
    used: int
    part: tuple[int, int] | None = None
    intro: str = _DIFF_INTRO


class _Packer:
    """First-fit packing of file sections into messages of at most `room` characters
    of user text (the token budget left after the system prompt, in characters).

    Sizes are of the text as sent: with the PR's context (`lead`) before each
    message's intro, and a diff's rows numbered (`numbered_view`)."""

    def __init__(self, budget: int, system: str, chars_per_token: float, lead: str = "") -> None:
        left = budget - estimate_tokens(system, chars_per_token)
        room = math.floor(left * chars_per_token) - len(lead)
        while room > 0 and math.ceil((room + len(lead)) / chars_per_token) > left:  # rounding
            room -= 1
        if room < _MIN_ROOM_CHARS:
            raise ValueError(
                f"a message budget of {budget} tokens leaves {max(left, 0)} after the system "
                f"prompt; raise max_message_tokens so {_MIN_ROOM_CHARS} characters remain"
            )
        self.room, self.system, self.cpt, self.lead = room, system, chars_per_token, lead
        self.bins: list[_Bin] = []

    def add(self, path: str, section: str) -> None:
        """Into the first open message with room, else a new one. Text is
        `intro + sections joined by blank lines`, so a section costs its shown length + 1."""
        size = _shown(section)
        for b in self.bins:
            if b.part is None and b.used + size + 1 <= self.room + 1:
                b.files.append(path)
                b.sections.append(section)
                b.used += size + 1
                return
        self.bins.append(_Bin([path], [section], len(_DIFF_INTRO) + size + 1))

    def add_parts(self, file: ChangedFile, hunks: Sequence[_Hunk]) -> None:
        """One message per piece of a diff too big for any message."""
        header = _file_header(file)
        room = self.room - len(_part_intro(file.filename, 10**6, 10**6)) - len(header) - 1
        pieces = [p for h in hunks for p in _split_hunk(h, room)]
        groups: list[list[str]] = []
        size = room + 1
        for text in (p.render() for p in pieces):
            shown = _shown(header + text) - len(header)
            if size + shown + 1 > room + 1:
                groups.append([])
                size = 0
            groups[-1].append(text)
            size += shown + 1
        for k, group in enumerate(groups, 1):
            intro = _part_intro(file.filename, k, len(groups))
            section = header + "\n".join(group) + "\n"
            self.bins.append(_Bin([file.filename], [section], 0, (k, len(groups)), intro))

    def messages(self, kind: Literal["diff", "summary"], max_comments: int) -> list[PlannedMessage]:
        out = []
        for b in self.bins:
            text = self.lead + b.intro + "\n".join(b.sections)
            shown = user_text(text, kind)
            tokens = estimate_tokens(self.system, self.cpt) + estimate_tokens(shown, self.cpt)
            out.append(
                PlannedMessage(
                    index=0,
                    files=tuple(b.files),
                    text=text,
                    tokens=tokens,
                    part=b.part,
                    kind=kind,
                    max_comments=max_comments,
                    prompt_version=PROMPT_VERSION,
                )
            )
        return out


def _shown(section: str) -> int:
    """A diff section's length as sent: numbered."""
    return len(numbered_view(section))


def _pack_diffs(
    files: Sequence[ChangedFile], budget: int, cpt: float, pull: PullContext
) -> list[PlannedMessage]:
    """Files of one directory side by side (sorted by directory, then name), first-fit."""
    system = prompt_text("diff", max_comments=pull.max_comments)
    packer = _Packer(budget, system, cpt, pull.lead())
    for file in sorted(files, key=lambda f: (posixpath.dirname(f.filename), f.filename)):
        hunks = _patch_hunks(file.patch or "")
        section = _file_header(file) + "\n".join(h.render() for h in hunks) + "\n"
        if len(_DIFF_INTRO) + _shown(section) + 1 > packer.room + 1:
            packer.add_parts(file, hunks)
        else:
            packer.add(file.filename, section)
    return packer.messages("diff", pull.max_comments)


def _pack_summaries(
    files: Sequence[ChangedFile], budget: int, cpt: float, pull: PullContext
) -> list[PlannedMessage]:
    """Headlines in path order, filling each message before starting the next."""
    system = prompt_text("summary", max_comments=pull.max_comments)
    packer = _Packer(budget, system, cpt, pull.lead())
    for file in sorted(files, key=lambda f: f.filename):
        line = headline(file)
        last = packer.bins[-1] if packer.bins else None
        if last is not None and last.used + len(line) <= packer.room:
            last.files.append(file.filename)
            last.sections.append(line)
            last.used += len(line)
        else:
            used = len(_SUMMARY_INTRO) + len(line)
            packer.bins.append(_Bin([file.filename], [line], used, intro=_SUMMARY_INTRO))
    for b in packer.bins:  # headlines already end with a newline: no blank lines between
        b.sections = ["".join(b.sections)]
    return packer.messages("summary", pull.max_comments)


def plan_review(
    files: Sequence[ChangedFile],
    config: PlanningConfig,
    *,
    repo: str | None = None,
    model: str = "",
    pull: PullContext | None = None,
    attributes: GitAttributes | None = None,
) -> ReviewPlan:
    """The messages one review of `files` needs under `config`, for `model` on `repo`;
    `pull` is what every message says of the PR besides its diff, `attributes` the
    repository's `.gitattributes` at the head (`parse_gitattributes`), if known.

    Raises ValueError when the model's token budget cannot hold a useful message.
    """
    override = config.override_for(repo)
    kept, skipped, data = triage(
        files, skip=(*override.skip, *config.skip), keep=override.keep, attributes=attributes
    )
    full, summarised = kept, list[ChangedFile]()
    note = None
    if config.large_pr_files is not None and len(kept) > config.large_pr_files:
        full, summarised = rank_by_risk(kept, config.large_pr_full_files)
        note = degraded_note(len(kept), len(full), config.large_pr_files)
    budget, cpt = config.budget_for(model), config.chars_per_token
    pull = pull or PullContext()
    messages = _pack(full, summarised, budget, cpt, pull)
    if config.max_messages is not None and len(messages) > config.max_messages:
        full, summarised, messages = _within(
            full, summarised, config.max_messages, budget, cpt, pull
        )
        note = _capped_note(len(kept), len(full), config.max_messages)
    if data and (config.max_messages is None or len(messages) < config.max_messages):
        messages += _pack_summaries([f for f, _ in data], budget, cpt, pull)[:1]  # one at most
    return ReviewPlan(
        messages=tuple(m.model_copy(update={"index": i}) for i, m in enumerate(messages)),
        skipped=tuple(SkippedFile(path=p, reason=r) for p, r in skipped),
        summarised=tuple(sorted(f.filename for f in summarised)),
        summarised_data=tuple(SkippedFile(path=f.filename, reason=r) for f, r in data),
        degraded=bool(summarised),
        note=note if summarised else None,
    )


def _pack(
    full: Sequence[ChangedFile],
    summarised: Sequence[ChangedFile],
    budget: int,
    cpt: float,
    pull: PullContext,
) -> list[PlannedMessage]:
    return [*_pack_diffs(full, budget, cpt, pull), *_pack_summaries(summarised, budget, cpt, pull)]


def _within(
    full: Sequence[ChangedFile],
    summarised: Sequence[ChangedFile],
    cap: int,
    budget: int,
    cpt: float,
    pull: PullContext,
) -> tuple[list[ChangedFile], list[ChangedFile], list[PlannedMessage]]:
    """The most of the riskiest files reviewed in full whose plan stays within `cap`
    messages, the rest summarised: one huge diff must not spend a team's window.

    A binary search over how many of the ranked files stay in full; each step packs
    the plan again, so it costs a few packings, not one per file."""
    ranked, _ = rank_by_risk(full, len(full))
    lo, hi = 0, len(ranked)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_pack(ranked[:mid], [*ranked[mid:], *summarised], budget, cpt, pull)) <= cap:
            lo = mid
        else:
            hi = mid - 1
    kept_full, rest = ranked[:lo], [*ranked[lo:], *summarised]
    return kept_full, rest, _pack(kept_full, rest, budget, cpt, pull)


def _capped_note(kept: int, full: int, cap: int) -> str:
    return (
        f"Reviewing all {kept} reviewable files of this pull request line by line would "
        f"take more than {cap} messages ([planning] max_messages): only the {full} riskiest "
        "(source before tests and docs, sensitive paths, bigger changes first) were "
        f"reviewed line by line; {kept - full} were summarised."
    )


def estimate(
    plan: ReviewPlan,
    account: Account,
    model: str,
    *,
    when: dt.datetime | None = None,
    output_tokens: int | None = None,
) -> dict[str, int]:
    """Milli-units the plan charges each window of `account`'s plan for `model`: each
    message is one request, charged what `request_cost` says at `when` (now by default;
    one instant for all, so a peak-hour boundary cannot split the sum). A credit window
    is charged each message's planned tokens plus `output_tokens` at the plan's highest
    time factor: an upper estimate, as a grant reserves."""
    when = when or dt.datetime.now(dt.UTC)
    factors = account.plan.time_factors
    # From the factor at `when` to the highest one: credits scale with the factor.
    rescale = 1.0
    if factors is not None:
        rescale = max(factors.peak_factor, factors.off_peak_factor) / factors.factor_at(when)
    credit_windows = {w.name for w in account.effective_plan.credit_windows}
    totals = dict.fromkeys((w.name for w in account.effective_plan.windows), 0)
    for message in plan.messages:
        bound = None
        if output_tokens is not None:
            bound = CallBound(input=message.tokens, output=output_tokens, estimated=message.tokens)
        for window, milli in request_cost(account, model, when, bound=bound).items():
            if bound is not None and window in credit_windows:
                milli = math.ceil(milli * rescale)
            totals[window] = totals.get(window, 0) + milli
    return totals
