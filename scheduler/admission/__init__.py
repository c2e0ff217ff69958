"""Admission: which of a PR's messages may be on the queue, and what waits for budget.

Every transition of a message is one Redis transaction (WATCH on the PR's keys, then
MULTI/EXEC), and a transition that dispatches a message creates its RQ job inside the
same transaction, so a crash can never leave a message marked queued without a job,
or a job without its message marked queued.

Fairness has two parts. A PR may have at most `per_pr_inflight` messages queued,
running or waiting at once (`fifo`: no cap), so a 300-message PR does not put 300 jobs
in front of everyone. And messages that wait for an account stand in that account's
*line*: under `fair` in start-time fair order (each PR's next message is placed one
step after its previous one, a newcomer half a step ahead of the message served last), under
`fifo` by ticket. When a slot frees, the waker moves the line's head straight onto the
queue: no polling gap. Messages that wait for a reason of their own (their PR is over
its share, an error backoff) wait on their own due time instead, so they never block
the head of a line.

The one class, `Admission`, is put together from a module per part of that story, over
a shared core:
- `core`: the PR transaction, Redis's clock, the reads, and queueing a message's run
  or a PR's finalize job;
- `lifecycle`: a PR arrives, is planned, is superseded or cancelled, and ends;
- `runs`: a worker claims, parks and finishes a message; lost runs run again;
- `lines`: messages wait in an account's line, and the waker moves its head;
- `offpeak`: large PRs' messages wait for off-peak prices on a credit plan.
"""

from __future__ import annotations

from scheduler.admission.lifecycle import PrLifecycle
from scheduler.admission.lines import Lines
from scheduler.admission.offpeak import DEFER_MARK, Deferral, OffPeak, plan_deferral
from scheduler.admission.runs import MAX_RUNS, Claimed, Runs
from scheduler.config.review import Fairness
from scheduler.state.jobs import FINALIZE_JOB, REVIEW_JOB, job_id_for

__all__ = [
    "DEFER_MARK",
    "FINALIZE_JOB",
    "MAX_RUNS",
    "REVIEW_JOB",
    "Admission",
    "Claimed",
    "Deferral",
    "Fairness",
    "job_id_for",
    "plan_deferral",
]


class Admission(PrLifecycle, OffPeak, Runs, Lines):
    """The only code that changes PR and message state (see `scheduler.state.records`).

    Mixins over one core, not parts the class delegates to: every caller (workers,
    waker, intake, CLI) holds one `Admission`, and each part calls the core's
    transaction and enqueue helpers on `self`, so neither a forwarding method per
    move nor a second object to keep in step is needed."""
