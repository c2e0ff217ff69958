"""Where reviewq keeps its state in Redis: every key name, under one prefix.

Keys, for a prefix `P` (one per deployment, `reviewq:<queue>` by default):
- `P:pr:<pr>`          HASH  the PR's meta (`PrMeta` fields, JSON where structured);
- `P:pr:<pr>:m`        HASH  message id `<gen>.<n>` -> `MessageState` JSON;
- `P:pr:<pr>:body`     HASH  message id -> the planned message (text and files);
- `P:pr:<pr>:reply`    HASH  message id -> the parsed reply of a done message;
- `P:pr:<pr>:backlog`  LIST  ids of pending messages, in the order they will run;
- `P:pr:<pr>:seen`     HASH  what reviews of the PR covered: `f:<path>` -> the file's
                             content and the review that saw it, `plan:<sha>` -> the
                             content of each file a head's plan holds (incremental
                             review, `workers.incremental`);
- `P:prs`              ZSET  PR -> arrival ms: every PR the deployment knows;
- `P:line:<account>`   ZSET  member -> place in line: messages waiting for an account;
- `P:line-due`         ZSET  account -> when its line's head should be tried again;
- `P:timed`            ZSET  member -> due ms: messages waiting for a time of their own;
- `P:running`          ZSET  member -> claim deadline: messages a worker is calling;
- `P:queued`           ZSET  `<member>@<dispatch>` -> 0, or since when (Redis ms) its
                             job looks lost: runs on the queue, not yet claimed;
- `P:wake`             LIST  wake-ups for the waker (account names whose slot freed);
- `P:freed`            ZSET  account -> when (Redis ms) a slot of it last freed;
- `P:vtime`            STR   the start tag of the message served last (`fair` lines);
- `P:ticket`           STR   the last ticket handed out: messages' arrival order;
- `P:finalize-due`     ZSET  `[pr, gen, attempt]` JSON -> when to run that finalize again;
- `P:plan-due`         ZSET  `[ref JSON, source, attempt]` JSON -> when to plan again;
- `P:trace`            LIST  the workers' grant trace, when `trace` is on;
- `P:deferred`         ZSET  PR -> the off-peak start (Redis ms) its messages wait for;
- `P:deferrals`        HASH  account -> messages deferred to off-peak so far (/metrics);
- `P:calendar`         STR   a simulation's calendar (`scheduler.quota.timeofday`);
- `P:waker-lock`       STR   the token of the waker that acts now.
A *member* is `<pr>|<message id>`. PR keys expire `PR_TTL_S` after the last change.

`<pr>` in a key name is the PR id with every character outside a small safe set
percent-encoded (`key_part`): a PR id is text from outside (a webhook, the command
line), and `acme/api#1:m` must not name the message hash of `acme/api#1`. The safe set
covers every forge id (`owner/repo#N`, `group/sub/project!N`), so their keys read as
the ids do.

The key names are an API: a live Redis holds them across upgrades.
"""

from __future__ import annotations

import re

__all__ = [
    "PR_TTL_S",
    "Keys",
    "key_part",
    "queued_entry",
    "split_member",
    "split_queued",
]

# Long enough for a person to read a finished PR's state; every write renews it.
PR_TTL_S = 7 * 86_400

_UNSAFE = re.compile(r"[^A-Za-z0-9/#!._~=+,@-]")


def key_part(text: str) -> str:
    """`text` made safe for one segment of a key name: a one-to-one encoding (`%` is
    itself encoded), so two ids never share a key, and no id can add a `:segment`,
    a `{hash tag}` or whitespace to a key."""
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), text)


class Keys:
    """Key names under one prefix; a test or a `simulate` run uses its own prefix."""

    def __init__(self, prefix: str, pr_ttl_s: int = PR_TTL_S) -> None:
        self.prefix = prefix
        self.pr_ttl_s = pr_ttl_s
        self.prs = f"{prefix}:prs"
        self.line_due = f"{prefix}:line-due"
        self.timed = f"{prefix}:timed"
        self.running = f"{prefix}:running"
        self.queued = f"{prefix}:queued"
        self.wake = f"{prefix}:wake"
        self.freed = f"{prefix}:freed"
        self.vtime = f"{prefix}:vtime"
        self.ticket = f"{prefix}:ticket"
        self.finalize_due = f"{prefix}:finalize-due"
        self.plan_due = f"{prefix}:plan-due"
        self.trace = f"{prefix}:trace"
        self.deferred = f"{prefix}:deferred"
        self.deferrals = f"{prefix}:deferrals"
        self.calendar = f"{prefix}:calendar"
        self.waker_lock = f"{prefix}:waker-lock"

    def meta(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}"

    def msgs(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}:m"

    def body(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}:body"

    def reply(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}:reply"

    def backlog(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}:backlog"

    def seen(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}:seen"

    def line(self, account: str) -> str:
        return f"{self.prefix}:line:{key_part(account)}"

    def pr_keys(self, pr: str) -> list[str]:
        return [
            self.meta(pr),
            self.msgs(pr),
            self.body(pr),
            self.reply(pr),
            self.backlog(pr),
            self.seen(pr),
        ]


def queued_entry(member: str, dispatch: int) -> str:
    """A `P:queued` entry names the dispatch too, so removing an old run's entry can
    never remove the next run's."""
    return f"{member}@{dispatch}"


def split_queued(entry: str) -> tuple[str, int]:
    member, _, dispatch = entry.rpartition("@")
    return member, int(dispatch)


def split_member(member: str) -> tuple[str, str]:
    """`<pr>|<message id>` -> (pr, message id); PR ids never contain '|'."""
    pr, sep, mid = member.rpartition("|")
    if not sep or not pr or not mid:
        raise ValueError(f"not a message member: {member!r}")
    return pr, mid
