"""The few GitLab REST calls reviewq makes (gitlab.com or a self-managed instance),
with failures as typed exceptions.

Why not python-gitlab: it is well kept, but on a 429 it sleeps inside the call and
retries (`obey_rate_limit`, up to `max_retries`), and with that turned off its error
carries no headers, so the `Retry-After` or `RateLimit-Reset` a job must reschedule by
is lost. A job never sleeps (a wait must not hold a worker), and a hidden retry of a
POST is how a bot comments twice. So, like the GitHub client, this makes exactly one
HTTP request per call (`retries=0`, no redirects followed), and the job queue is the
only retry loop (`workers/forge_retry.py`).

The token comes from the caller (read from the environment variable the config
names), travels only in the `PRIVATE-TOKEN` header (or `Authorization: Bearer` for an
OAuth token) to the configured host, and is scrubbed from every message and repr. A
project is named by its full path (`group/sub/project`), URL-encoded as one segment.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import AliasPath, BaseModel, ConfigDict, Field, ValidationError

from workers.forge.gitlab_errors import (
    GitLabAuthError,
    GitLabBadRequest,
    GitLabError,
    GitLabNotFound,
    GitLabRateLimited,
    GitLabServerError,
    GitLabTransportError,
    error_for_response,
    redact,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "GITLAB_FILES_CAP",
    "DiffListing",
    "GitLabAuth",
    "GitLabAuthError",
    "GitLabBadRequest",
    "GitLabClient",
    "GitLabComparison",
    "GitLabDiff",
    "GitLabDiscussion",
    "GitLabError",
    "GitLabNotFound",
    "GitLabNote",
    "GitLabRateLimited",
    "GitLabServerError",
    "GitLabTransportError",
    "MergeRequestInfo",
    "MergeRequestVersion",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://gitlab.com"
# GitLab's largest "maximum diff files" setting: a listing past it is not the whole MR.
GITLAB_FILES_CAP = 3000
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=10.0)
_PER_PAGE = 100  # GitLab's maximum
_MAX_PAGES = 200  # a server that always names a next page cannot loop us
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_TOKEN = re.compile(r"[\x21-\x7e]+")
_HEADERS = {"Accept": "application/json", "User-Agent": "reviewq"}

GitLabAuth = Literal["private-token", "bearer"]
M = TypeVar("M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class MergeRequestInfo(_Model):
    """An MR as GitLab reports it now; `draft` folds in the older `work_in_progress`."""

    iid: int
    state: str
    sha: str | None = None
    title: str = ""
    description: str | None = None
    draft: bool = False
    work_in_progress: bool = False

    @property
    def is_draft(self) -> bool:
        return self.draft or self.work_in_progress


class MergeRequestVersion(_Model):
    """One diff version of an MR (newest first); a discussion's position names its SHAs."""

    id: int
    head_commit_sha: str
    base_commit_sha: str
    start_commit_sha: str
    state: str = ""


class GitLabDiff(_Model):
    """One file of an MR's diff. `diff` is empty when GitLab left it out: `too_large`
    (over the instance's diff limits) or `collapsed` (over a tenth of them)."""

    old_path: str
    new_path: str
    diff: str = ""
    new_file: bool = False
    renamed_file: bool = False
    deleted_file: bool = False
    too_large: bool | None = None
    collapsed: bool | None = None
    generated_file: bool | None = None


class GitLabComparison(_Model):
    """`GET /projects/:id/repository/compare`: the files whose content differs between
    two commits. `compare_timeout`: GitLab gave up and the list is not the whole."""

    diffs: tuple[GitLabDiff, ...] = ()
    compare_timeout: bool = False
    compare_same_ref: bool = False


@dataclass(frozen=True, slots=True)
class DiffListing:
    """The files GitLab listed; `truncated`: the MR has more than `max_files`."""

    diffs: tuple[GitLabDiff, ...]
    truncated: bool


class GitLabNote(_Model):
    """A note (a comment) as GitLab lists it; `author` is the author's username."""

    id: int
    body: str = ""
    author: str | None = Field(default=None, validation_alias=AliasPath("author", "username"))
    system: bool = False
    type: str | None = None


class GitLabDiscussion(_Model):
    """A thread: an inline discussion, or (`individual_note`) one plain note."""

    id: str
    individual_note: bool = False
    notes: tuple[GitLabNote, ...] = ()


class _User(_Model):
    username: str = Field(min_length=1)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    return (parsed.scheme, parsed.host, parsed.port) if parsed.host else None


def _encoded(name: str) -> str:
    """A project path or file path as GitLab wants it in a URL: one segment."""
    return quote(name, safe="")


def mr_path(project: str, iid: int) -> str:
    if not project or iid < 1:
        raise ValueError(f"not a merge request: {project!r}!{iid}")
    return f"/projects/{_encoded(project)}/merge_requests/{iid}"


class GitLabClient:
    """One GitLab account on one instance, by token. `base_url` is the instance
    (`https://gitlab.example.com`, or with its relative root); the API is under it."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        auth: GitLabAuth = "private-token",
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if not _TOKEN.fullmatch(token):
            raise ValueError("token must be non-empty printable ASCII without whitespace")
        origin = _origin(base_url)
        if origin is None or origin[0] not in ("http", "https"):
            raise ValueError(f"base_url {base_url!r} must be an http(s) URL")
        self._token, self._origin = token, origin
        self.base_url = base_url.rstrip("/")
        self._auth = (
            {"Authorization": f"Bearer {token}"} if auth == "bearer" else {"PRIVATE-TOKEN": token}
        )
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._username: str | None = None
        self._http = httpx.Client(
            base_url=self.base_url + "/api/v4",
            transport=transport or httpx.HTTPTransport(retries=0),
            timeout=timeout,
            follow_redirects=False,
            headers=_HEADERS,
        )

    def __repr__(self) -> str:
        return f"GitLabClient(base_url={self.base_url!r}, token=[redacted])"

    def close(self) -> None:
        self._http.close()

    def viewer_username(self) -> str:
        """The account this token acts as (`GET /user`), asked once per client."""
        if self._username is None:
            self._username = self._call("GET", "/user", _User).username
        return self._username

    def merge_request(self, project: str, iid: int) -> MergeRequestInfo:
        return self._call("GET", mr_path(project, iid), MergeRequestInfo)

    def versions(self, project: str, iid: int) -> list[MergeRequestVersion]:
        """Every diff version, newest first, as GitLab orders them."""
        path = mr_path(project, iid) + "/versions"
        return [v for page, _ in self._pages(path, MergeRequestVersion) for v in page]

    def list_diffs(
        self, project: str, iid: int, *, max_files: int = GITLAB_FILES_CAP
    ) -> DiffListing:
        """The MR's latest diff, every page up to `max_files`."""
        if max_files < 1:
            raise ValueError("max_files must be at least 1")
        diffs: list[GitLabDiff] = []
        more = False
        for page, has_next in self._pages(mr_path(project, iid) + "/diffs", GitLabDiff):
            diffs.extend(page)
            more = has_next
            if len(diffs) >= max_files:
                break
        return DiffListing(tuple(diffs[:max_files]), more or len(diffs) > max_files)

    def raw_file(self, project: str, path: str, ref: str, *, max_bytes: int) -> bytes | None:
        """A file's content at commit `ref`, or None when it is larger than `max_bytes`
        (read no further than that)."""
        url = f"/projects/{_encoded(project)}/repository/files/{_encoded(path)}/raw"
        what = f"GET /projects/{_encoded(project)}/repository/files/.../raw"
        try:
            with self._http.stream("GET", url, params={"ref": ref}, headers=self._auth) as got:
                if not got.is_success:
                    got.read()
                    now = self._clock_ms()
                    raise error_for_response(got, what, now, secrets=(self._token,))
                return _capped(got.iter_bytes(), max_bytes)
        except httpx.HTTPError as exc:
            raise self._transport_error(what, exc) from None

    def compare(self, project: str, old: str, new: str) -> GitLabComparison:
        """The trees of commits `old` and `new` compared directly (`straight=true`, no
        merge base), so a rewritten history still shows exactly the files whose content
        differs. An unknown commit is a `GitLabNotFound`."""
        for sha in (old, new):
            if not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha):
                raise ValueError(f"not a commit id: {sha!r}")
        path = f"/projects/{_encoded(project)}/repository/compare"
        response = self._send("GET", path, params={"from": old, "to": new, "straight": "true"})
        return self._parse(GitLabComparison, _json(response), response, f"GET {path}")

    def list_discussions(self, project: str, iid: int) -> list[GitLabDiscussion]:
        """Every thread of the MR, plain notes included (as `individual_note`s)."""
        path = mr_path(project, iid) + "/discussions"
        return [d for page, _ in self._pages(path, GitLabDiscussion) for d in page]

    def create_discussion(
        self, project: str, iid: int, *, body: str, position: Mapping[str, Any]
    ) -> GitLabDiscussion:
        """An inline thread at `position` (GitLab's `position` object). Not idempotent
        by itself: see `GitLabSink`. A position off the diff is a `GitLabBadRequest`."""
        path = mr_path(project, iid) + "/discussions"
        payload = {"body": body, "position": dict(position)}
        return self._call("POST", path, GitLabDiscussion, json=payload)

    def create_note(self, project: str, iid: int, *, body: str) -> GitLabNote:
        return self._call("POST", mr_path(project, iid) + "/notes", GitLabNote, json={"body": body})

    # -- one request ----------------------------------------------------------------

    def _pages(self, path: str, model: type[M]) -> Iterator[tuple[list[M], bool]]:
        """Each page's items and whether there is a next one: GitLab's `X-Next-Page`,
        else a `Link: rel="next"` (which may only point at the configured host)."""
        url: str = path
        params: dict[str, int] | None = {"per_page": _PER_PAGE, "page": 1}
        for _ in range(_MAX_PAGES):
            response = self._send("GET", url, params=params)
            data = _json(response)
            if not isinstance(data, list):
                raise GitLabTransportError(response.status_code, f"GET {path}: not a JSON list")
            items = [self._parse(model, item, response, f"GET {path}") for item in data]
            next_page = response.headers.get("x-next-page", "").strip()
            next_url = response.links.get("next", {}).get("url")
            yield items, bool(next_page or next_url)
            if next_page.isdigit():
                url, params = path, {"per_page": _PER_PAGE, "page": int(next_page)}
            elif next_url:
                if _origin(next_url) != self._origin:
                    raise GitLabTransportError(None, f"GET {path}: next page is on another host")
                url, params = next_url, None
            else:
                return
        raise GitLabTransportError(None, f"GET {path}: more than {_MAX_PAGES} pages; gave up")

    def _call(self, method: str, path: str, model: type[M], *, json: object = None) -> M:
        response = self._send(method, path, json=json)
        return self._parse(model, _json(response), response, f"{method} {path}")

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, int | str] | None = None,
        json: object = None,
    ) -> httpx.Response:
        """One request; a non-2xx answer or a transport failure comes back as a raise."""
        what = f"{method} {httpx.URL(url).path}"
        t0 = time.monotonic()
        try:
            response = self._http.request(method, url, params=params, json=json, headers=self._auth)
        except httpx.HTTPError as exc:
            raise self._transport_error(what, exc) from None
        log.debug("gitlab %s -> %d in %d ms", what, response.status_code, _ms_since(t0))
        if response.is_success:
            return response
        raise error_for_response(response, what, self._clock_ms(), secrets=(self._token,))

    def _transport_error(self, what: str, exc: httpx.HTTPError) -> GitLabTransportError:
        sent = not isinstance(exc, _NOT_SENT)
        text = redact(f"{type(exc).__name__}: {exc}", (self._token,))
        return GitLabTransportError(None, f"{what}: {text}", sent)

    def _parse(self, model: type[M], data: object, response: httpx.Response, what: str) -> M:
        """GitLab's JSON as a model; a shape we do not know is garbage, not a crash."""
        if data is None:
            raise GitLabTransportError(response.status_code, f"{what}: the body is not JSON")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise GitLabTransportError(
                response.status_code,
                f"{what}: unexpected response shape at {where}: {first['msg']}",
            ) from None


def _capped(chunks: Iterator[bytes], max_bytes: int) -> bytes | None:
    """The whole body, or None as soon as it grows past `max_bytes`."""
    kept: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            return None
        kept.append(chunk)
    return b"".join(kept)


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _ms_since(t0: float) -> int:
    return round((time.monotonic() - t0) * 1000)
