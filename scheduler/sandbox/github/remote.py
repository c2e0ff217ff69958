"""Drive a running fake GitHub from the outside, as tests and scripts do.

Everything goes through `/_gh/*` over HTTP rather than into `app.state`, so a test
sees the fake exactly as a separate process (`reviewq sandbox github`) would show it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from scheduler.sandbox.github.app import create_github_app
from scheduler.sandbox.github.state import FakeGitHubConfig
from scheduler.sandbox.server import ServerHandle, serve_in_thread
from workers.review.changes import ChangedFile

__all__ = ["FakeGitHubServer", "GitHubControl", "serve_fake_github"]


class GitHubControl:
    """A thin client for `/_gh/*`; every call raises on a non-2xx answer."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout

    def _call(self, method: str, path: str, body: object = None) -> Any:
        response = httpx.request(method, self.url + path, json=body, timeout=self._timeout)
        response.raise_for_status()
        return response.json()

    def add_pr(
        self,
        owner: str,
        repo: str,
        number: int,
        head_sha: str,
        *,
        files: Sequence[ChangedFile] = (),
        synthetic_files: int = 0,
        draft: bool = False,
        title: str = "A pull request",
        state: str = "open",
        head_repo: str | None = None,
        body: str | None = None,
        force: bool = False,
        contents: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create the PR or move it to `head_sha`; returns the fake's summary of it.
        `head_repo` ("owner/name") puts the head in a fork; `force`: the new head does
        not descend from the previous one; `contents`: other files at this head."""
        spec = {
            "owner": owner,
            "repo": repo,
            "number": number,
            "head_sha": head_sha,
            "files": [f.model_dump(mode="json") for f in files],
            "synthetic_files": synthetic_files,
            "draft": draft,
            "title": title,
            "state": state,
            "head_repo": head_repo,
            "body": body,
            "force": force,
            "contents": dict(contents or {}),
        }
        result: dict[str, Any] = self._call("POST", "/_gh/prs", spec)
        return result

    def add_review(
        self,
        owner: str,
        repo: str,
        number: int,
        *,
        user: str | None,
        body: str,
        commit_id: str | None = None,
        commit_gone: bool = False,
        state: str = "COMMENTED",
    ) -> dict[str, Any]:
        """A review written by `user` (None: a deleted account), not the token's own;
        `commit_id` None means the PR's head, `commit_gone` a null `commit_id` (the
        commit was garbage collected). Returns it as the API lists it."""
        spec = {"owner": owner, "repo": repo, "number": number, "user": user, "body": body}
        extra = {"commit_id": commit_id, "commit_gone": commit_gone, "state": state}
        result: dict[str, Any] = self._call("POST", "/_gh/reviews", {**spec, **extra})
        return result

    def faults(self, **changes: object) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/_gh/faults", changes)
        return result

    def reviews(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_gh/reviews")["reviews"]
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_gh/stats")
        return result

    def requests_to(self, route: str, status: int | None = None) -> int:
        """How many API requests hit `route` (e.g. "GET .../files"), of one status or all."""
        counts: dict[str, int] = self.stats()["by_route"].get(route, {})
        return sum(n for s, n in counts.items() if status is None or s == str(status))

    def reset(self) -> None:
        self._call("POST", "/_gh/reset")


@dataclass
class FakeGitHubServer:
    """A fake served on loopback: `url` for the API client, `control` for the test."""

    handle: ServerHandle
    control: GitHubControl
    token: str

    @property
    def url(self) -> str:
        return self.handle.url

    def stop(self) -> None:
        self.handle.stop()

    def __enter__(self) -> FakeGitHubServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_fake_github(
    config: FakeGitHubConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> FakeGitHubServer:
    """Start a fake on a kernel-picked port; stop it with `stop()` or `with`."""
    config = config or FakeGitHubConfig()
    handle = serve_in_thread(create_github_app(config), port, host)
    return FakeGitHubServer(handle, GitHubControl(handle.url), config.token)
