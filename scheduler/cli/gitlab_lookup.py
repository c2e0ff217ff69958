"""`reviewq enqueue` for a GitLab merge request: its head commit, as GitLab reports it.

Only the configured instance (`[review] gitlab_url`) is asked, with the token in the
variable `[review] gitlab_token_env` names: a merge request URL on another host is
refused rather than sending the token there.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import click

from scheduler.config import ConfigError, Settings
from scheduler.ops.deployment import ParsedPr
from scheduler.state.refs import PullRequestRef
from workers.forge.gitlab import GitLabAuthError, GitLabClient, GitLabError, GitLabNotFound

__all__ = ["gitlab_ref"]

EXIT_FAILURE = 1


def _fail(message: str) -> click.exceptions.Exit:
    click.echo(f"error: {message}", err=True)
    return click.exceptions.Exit(EXIT_FAILURE)


def gitlab_ref(settings: Settings, pr: ParsedPr, text: str) -> PullRequestRef:
    """The MR at its head commit; exit 1 when it is not open and ready, exit 2 (a
    `ConfigError`) when the token is missing or refused, or the URL is elsewhere."""
    review = settings.review
    host, configured = urlsplit(text.strip()).netloc, urlsplit(review.gitlab_url).netloc
    if host.lower() != configured.lower():
        raise ConfigError(
            f"{text.strip()} is on {host}, but this deployment's GitLab is {configured} "
            "([review] gitlab_url)"
        )
    token = os.environ.get(review.gitlab_token_env, "").strip()
    if not token:
        raise ConfigError(
            f"environment variable {review.gitlab_token_env} is not set; enqueuing a GitLab "
            "merge request looks its head commit up with a token ([review] gitlab_token_env)"
        )
    assert pr.owner and pr.repo and pr.number
    project = f"{pr.owner}/{pr.repo}"
    client = GitLabClient(token, base_url=review.gitlab_url, auth=review.gitlab_auth)
    try:
        info = client.merge_request(project, pr.number)
    except GitLabAuthError as exc:
        raise ConfigError(f"{review.gitlab_token_env} was refused by GitLab: {exc}") from None
    except GitLabNotFound:
        where = review.gitlab_url
        raise _fail(
            f"{pr.id}: no such merge request at {where}, or the token cannot see it"
        ) from None
    except GitLabError as exc:
        raise _fail(f"{pr.id}: could not look it up: {exc}") from None
    finally:
        client.close()
    if info.state != "opened":
        raise _fail(f"{pr.id} is {info.state}: there is nothing to review")
    if info.is_draft:
        raise _fail(f"{pr.id} is a draft: it is reviewed once marked ready")
    if not info.sha:
        raise _fail(f"{pr.id}: GitLab names no head commit for it yet")
    return PullRequestRef(
        id=pr.id, head_sha=info.sha, forge="gitlab", owner=pr.owner, repo=pr.repo, number=pr.number
    )
