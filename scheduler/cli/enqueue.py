"""`reviewq enqueue`: queue a PR for review by hand, through the webhook's own path.

A GitHub PR is looked up for its head commit (its files are listed later, by the plan
job, as for a webhook); a local diff travels in the plan job itself. Both end in
`intake.enqueue_pr`, so a PR already queued or reviewed at that head is not queued
twice, whoever asked first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import click

from scheduler.cli.gitlab_lookup import gitlab_ref
from scheduler.config import ConfigError, Settings
from scheduler.intake import ForgeConflict, enqueue_pr
from scheduler.ops.deployment import ParsedPr, PrSyntaxError, connect, parse_pr
from scheduler.state.refs import PullRequestRef
from workers.forge.github import GitHubAuthError, GitHubClient, GitHubError, GitHubNotFound

__all__ = ["enqueue_command"]

EXIT_FAILURE = 1
_HEX_SHA = re.compile(r"[0-9a-fA-F]{7,64}")


def _fail(message: str, code: int = EXIT_FAILURE) -> click.exceptions.Exit:
    click.echo(f"error: {message}", err=True)
    return click.exceptions.Exit(code)


def _github_ref(settings: Settings, pr: ParsedPr) -> PullRequestRef:
    """The PR at its head commit, as GitHub reports it now."""
    review = settings.review
    token = os.environ.get(review.github_token_env, "").strip()
    if not token:
        raise ConfigError(
            f"environment variable {review.github_token_env} is not set; enqueuing a "
            "GitHub PR looks its head commit up with a token ([review] github_token_env)"
        )
    assert pr.owner and pr.repo and pr.number
    client = GitHubClient(token, base_url=review.github_url)
    try:
        info = client.pull_request(pr.owner, pr.repo, pr.number)
    except GitHubAuthError as exc:
        raise ConfigError(f"{review.github_token_env} was refused by GitHub: {exc}") from None
    except GitHubNotFound:
        where = review.github_url
        raise _fail(f"{pr.id}: no such PR at {where}, or the token cannot see it") from None
    except GitHubError as exc:
        raise _fail(f"{pr.id}: could not look it up: {exc}") from None
    finally:
        client.close()
    if info.state != "open":
        raise _fail(f"{pr.id} is {info.state}: there is nothing to review")
    if info.draft:
        raise _fail(f"{pr.id} is a draft: it is reviewed once marked ready for review")
    return PullRequestRef(
        id=pr.id,
        head_sha=info.head_sha,
        forge="github",
        owner=pr.owner,
        repo=pr.repo,
        number=pr.number,
    )


def _diff_ref(
    ctx: click.Context, settings: Settings, diff_path: Path, pr_id: str | None, sha: str | None
) -> tuple[PullRequestRef, str]:
    if not pr_id:
        raise click.UsageError("--diff needs --pr ID: the id the review is stored under", ctx)
    try:
        pr = parse_pr(pr_id)
    except PrSyntaxError as exc:
        raise click.BadParameter(str(exc), ctx, param_hint="'--pr'") from None
    if pr.forge != "local":
        msg = (
            f"{pr_id!r} names a {pr.forge} PR; a local diff needs an id of its own "
            "(not owner/repo#N, group/project!N or a URL), so it cannot take over that "
            "PR's state"
        )
        raise click.BadParameter(msg, ctx, param_hint="'--pr'")
    if sha is not None and not _HEX_SHA.fullmatch(sha):
        msg = f"{sha[:60]!r} is not a commit id (7 to 64 hexadecimal digits)"
        raise click.BadParameter(msg, ctx, param_hint="'--sha'")
    limit = settings.planning.max_diff_bytes
    try:
        if diff_path.stat().st_size > limit:
            msg = f"{diff_path} is larger than {limit} bytes ([planning] max_diff_bytes)"
            raise click.BadParameter(msg, ctx, param_hint="'--diff'")
        text = diff_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read {diff_path}: {exc}"
        raise click.BadParameter(msg, ctx, param_hint="'--diff'") from None
    head = (sha or hashlib.sha1(text.encode()).hexdigest()).lower()
    ref = PullRequestRef(id=pr.id, head_sha=head, forge="local")
    return ref, text


_HELP_PR = "owner/repo#N, a GitHub PR URL or a GitLab merge request URL (head looked up)."


@click.command("enqueue")
@click.argument("pr_text", metavar="[PR]", required=False)
@click.option(
    "--diff",
    "diff_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Review a local unified diff instead of a GitHub PR (needs --pr).",
)
@click.option("--pr", "pr_id", help="With --diff: the id to store the review under.")
@click.option("--sha", help="With --diff: the head commit. Default: a hash of the diff.")
@click.option(
    "--again",
    is_flag=True,
    help="Review a head once more although its review was already sent.",
)
@click.option(
    "--now",
    is_flag=True,
    help="Review it at once: never deferred to off-peak prices (wakes it if it waits).",
)
@click.option(
    "--full",
    is_flag=True,
    help="Review every file, not only those changed since the last review (implies --again).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def enqueue_command(
    ctx: click.Context,
    pr_text: str | None,
    diff_path: Path | None,
    pr_id: str | None,
    sha: str | None,
    again: bool,
    now: bool,
    full: bool,
    as_json: bool,
) -> None:
    """Queue a PR for review: PR is owner/repo#N, a GitHub PR URL or a GitLab merge
    request URL (https://gitlab.example.com/group/sub/project/-/merge_requests/12),
    or use --diff FILE --pr ID for a local diff. A PR already queued or reviewed at the same
    head is left as it is (and says so); --again reviews a reviewed head once more;
    --full reviews every file of the PR, where a push after a review would otherwise
    review only the files changed since ([planning] incremental);
    --now has it reviewed at once, even in peak hours on a credit plan with off-peak
    scheduling, and wakes it if its messages already wait for off-peak.

    \b
    Exit codes:
      0  queued, or already queued at this head
      1  the forge has no such open PR, or could not be asked
      2  bad PR syntax, options, configuration or forge token
      3  Redis unreachable
    """
    settings: Settings = ctx.obj.settings
    if (pr_text is None) == (diff_path is None):
        raise click.UsageError("give a PR (owner/repo#N or its URL) or --diff FILE --pr ID", ctx)
    if diff_path is None and (pr_id or sha):
        raise click.UsageError(
            "--pr and --sha go with --diff; a PR's head comes from its forge", ctx
        )
    parsed = _forge_pr(ctx, pr_text) if pr_text is not None else None
    dep = connect(settings)  # Redis first: exit 3 before asking GitHub anything
    try:
        source: dict[str, Any]
        if parsed is not None and parsed.forge == "gitlab":
            assert pr_text is not None
            ref = gitlab_ref(settings, parsed, pr_text)
            source = {"kind": "gitlab", "project": f"{ref.owner}/{ref.repo}", "iid": ref.number}
        elif parsed is not None:
            ref, source = _github_ref(settings, parsed), {"kind": "github"}
        else:
            assert diff_path is not None
            ref, text = _diff_ref(ctx, settings, diff_path, pr_id, sha)
            source = {"kind": "diff", "text": text}
        if now:
            source["now"] = True
        if full:
            source["full"] = True
        try:
            queued = enqueue_pr(dep.admission, ref, source, again=again or full)
        except ForgeConflict as exc:
            raise _fail(str(exc)) from None
        woken = dep.admission.expedite(ref.id) if now else None
        meta = dep.admission.read_meta(ref.id)
    finally:
        dep.close()
    status = meta.status if meta else "unknown"
    _report(settings, ref, source["kind"], queued, status, as_json, woken)


def _forge_pr(ctx: click.Context, text: str) -> ParsedPr:
    try:
        gitlab_url = ctx.obj.settings.review.gitlab_url
        return parse_pr(text, forge_only=True, gitlab_url=gitlab_url)
    except PrSyntaxError as exc:
        raise click.BadParameter(str(exc), ctx, param_hint="'PR'") from None


def _report(
    settings: Settings,
    ref: PullRequestRef,
    kind: str,
    queued: bool,
    status: str,
    as_json: bool,
    woken: int | None = None,
) -> None:
    """`woken`: with --now, how many messages waiting for off-peak went back on the queue."""
    if as_json:
        data = {
            "pr": ref.id,
            "head_sha": ref.head_sha,
            "source": kind,
            "queued": queued,
            "status": status,
            "queue": settings.queue_name,
        }
        if woken is not None:
            data["now"], data["woken"] = True, woken
        click.echo(json.dumps(data, indent=2))
        return
    if woken is not None:
        click.echo(f"{ref.id}: reviewed now, never deferred to off-peak ({woken} message(s) woken)")
    if queued:
        click.echo(f"queued {ref.id} at {ref.head_sha[:12]} on queue {settings.queue_name!r}")
    else:
        hint = " (--again reviews it once more)" if status in {"done", "cancelled"} else ""
        click.echo(f"not queued again: {ref.id} at {ref.head_sha[:12]} is already {status}{hint}")
