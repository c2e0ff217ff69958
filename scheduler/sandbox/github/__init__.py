"""A fake GitHub REST API, served over real HTTP like the provider simulator.

It holds PRs in memory and serves them in GitHub's own shapes (its OpenAPI
description's example responses, overlaid with the fake's state), lists their files
and reviews with GitHub's paging, refuses what GitHub refuses (headers, review
bodies, comments not anchored in the diff), and injects the failures a review bot
must survive: primary and secondary rate limits, a 502 before or after the review was
stored. Tests and `reviewq sandbox github` drive it through `/_gh/*`, which can also
add reviews by accounts other than the token's. docs/testing.md says what it still
simplifies.
"""

from scheduler.sandbox.github.app import (
    MAX_REVIEW_BODY,
    SECONDARY_RATE_LIMIT_MESSAGE,
    create_github_app,
)
from scheduler.sandbox.github.remote import FakeGitHubServer, GitHubControl, serve_fake_github
from scheduler.sandbox.github.state import (
    DEV_GITHUB_TOKEN,
    FakeGitHub,
    FakeGitHubConfig,
    FakePull,
    FaultsUpdate,
    PostedReview,
    PullSpec,
    ReviewSpec,
    diff_lines,
    synthetic_files,
)

__all__ = [
    "DEV_GITHUB_TOKEN",
    "MAX_REVIEW_BODY",
    "SECONDARY_RATE_LIMIT_MESSAGE",
    "FakeGitHub",
    "FakeGitHubConfig",
    "FakeGitHubServer",
    "FakePull",
    "FaultsUpdate",
    "GitHubControl",
    "PostedReview",
    "PullSpec",
    "ReviewSpec",
    "create_github_app",
    "diff_lines",
    "serve_fake_github",
    "synthetic_files",
]
