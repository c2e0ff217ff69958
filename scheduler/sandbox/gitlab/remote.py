"""Drive a running fake GitLab from the outside, as tests, the demo and the chaos
suite do: everything goes through `/_gl/*` over HTTP, never into `app.state`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from scheduler.sandbox.gitlab.app import create_gitlab_app
from scheduler.sandbox.gitlab.state import FakeGitLabConfig, MrFile
from scheduler.sandbox.server import ServerHandle, serve_in_thread

__all__ = ["FakeGitLabServer", "GitLabControl", "serve_fake_gitlab"]


class GitLabControl:
    """A thin client for `/_gl/*`; every call raises on a non-2xx answer."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout

    def _call(self, method: str, path: str, body: object = None) -> Any:
        response = httpx.request(method, self.url + path, json=body, timeout=self._timeout)
        response.raise_for_status()
        return response.json()

    def add_mr(
        self,
        project: str,
        iid: int,
        head_sha: str,
        *,
        files: Sequence[MrFile] = (),
        base_sha: str = "0" * 40,
        state: str = "opened",
        draft: bool = False,
        title: str = "A merge request",
        repo_files: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create the MR or move it to `head_sha`; returns the fake's summary of it.
        `repo_files`: other files of the repository at this head (a `.gitattributes`)."""
        body = {
            "project": project,
            "iid": iid,
            "head_sha": head_sha,
            "base_sha": base_sha,
            "files": [f.model_dump(mode="json") for f in files],
            "state": state,
            "draft": draft,
            "title": title,
            "repo_files": dict(repo_files or {}),
        }
        result: dict[str, Any] = self._call("POST", "/_gl/mrs", body)
        return result

    def add_note(self, project: str, iid: int, *, username: str, body: str) -> dict[str, Any]:
        spec = {"project": project, "iid": iid, "username": username, "body": body}
        result: dict[str, Any] = self._call("POST", "/_gl/notes", spec)
        return result

    def faults(self, **changes: object) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/_gl/faults", changes)
        return result

    def notes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_gl/notes")["notes"]
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_gl/stats")
        return result

    def requests_to(self, route: str, status: int | None = None) -> int:
        """How many API requests hit `route` (e.g. "POST /projects/:id/.../notes")."""
        counts: dict[str, int] = self.stats()["by_route"].get(route, {})
        return sum(n for s, n in counts.items() if status is None or s == str(status))

    def reset(self) -> None:
        self._call("POST", "/_gl/reset")


@dataclass
class FakeGitLabServer:
    """A fake served on loopback: `url` for the client, `control` for the test."""

    handle: ServerHandle
    control: GitLabControl
    token: str

    @property
    def url(self) -> str:
        return self.handle.url

    def stop(self) -> None:
        self.handle.stop()

    def __enter__(self) -> FakeGitLabServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_fake_gitlab(
    config: FakeGitLabConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> FakeGitLabServer:
    """Start a fake on a kernel-picked port; stop it with `stop()` or `with`."""
    config = config or FakeGitLabConfig()
    handle = serve_in_thread(create_gitlab_app(config), port, host)
    return FakeGitLabServer(handle, GitLabControl(handle.url), config.token)
