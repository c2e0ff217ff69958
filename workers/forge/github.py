"""The few GitHub REST calls reviewq makes, with failures as typed exceptions.

Like the provider client, this makes exactly one HTTP request per call (`retries=0`,
no redirects followed): the job queue is the only retry loop, and a hidden retry of a
review POST is how a bot comments twice. Errors are sorted by what the caller does
next (wait until `retry_at_ms`, reschedule, alert a person, fold comments), not by
status alone. The token comes from the caller, lives only in request headers, and is
scrubbed from every message and repr this module produces.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import AliasPath, BaseModel, ConfigDict, Field, ValidationError

from workers.forge.github_errors import (
    DEFAULT_RETRY_AFTER_S,
    GitHubAuthError,
    GitHubError,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubServerError,
    GitHubTransportError,
    GitHubUnprocessable,
    error_for_response,
    json_or_none,
    redact,
    retry_at_ms,
)
from workers.review.changes import ChangedFile
from workers.review.model import ReviewComment

__all__ = [
    "COMPARE_FILES_CAP",
    "DEFAULT_BASE_URL",
    "DEFAULT_RETRY_AFTER_S",
    "DEFAULT_TIMEOUT",
    "GITHUB_FILES_CAP",
    "Comparison",
    "FileListing",
    "GitHubAuthError",
    "GitHubClient",
    "GitHubError",
    "GitHubNotFound",
    "GitHubRateLimited",
    "GitHubReview",
    "GitHubServerError",
    "GitHubTransportError",
    "GitHubUnprocessable",
    "PullRequestInfo",
    "ReviewEvent",
    "error_for_response",
    "retry_at_ms",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.github.com"
# GitHub's "list pull request files" stops at 3,000 files, without saying so.
GITHUB_FILES_CAP = 3000
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=10.0)
_PER_PAGE = 100
# GitHub's compare lists at most 300 files ("Compare two commits", REST docs, 2022-11-28):
# a listing that long may be cut short.
COMPARE_FILES_CAP = 300
# A bound on any listing, so a server that always links a next page cannot loop us.
_MAX_PAGES = 200
_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "reviewq",
}
# Errors raised before a byte left: GitHub cannot have acted on the request.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_TOKEN = re.compile(r"[\x21-\x7e]+")

ReviewEvent = Literal["COMMENT", "APPROVE", "REQUEST_CHANGES"]
M = TypeVar("M", bound=BaseModel)


class PullRequestInfo(BaseModel):
    """`changed_files` is GitHub's own count, which can exceed what the files API lists."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    number: int
    head_sha: str = Field(validation_alias=AliasPath("head", "sha"))
    state: str
    draft: bool = False
    title: str = ""
    body: str | None = None  # the description; None when the PR has none
    changed_files: int | None = None


@dataclass(frozen=True, slots=True)
class FileListing:
    """The files GitHub listed; `truncated` says the PR has more than were returned.

    A PR of exactly 3,000 files is reported truncated: GitHub's listing looks the same
    as for a larger one. Compare with `PullRequestInfo.changed_files` to be exact.
    """

    files: tuple[ChangedFile, ...]
    truncated: bool


class Comparison(BaseModel):
    """`GET /repos/{o}/{r}/compare/{base}...{head}`: `status` is `ahead` when base is an
    ancestor of head (`identical`, `behind`, `diverged` otherwise); `files` are the
    changes from the merge base, which GitHub cuts at `COMPARE_FILES_CAP`."""

    model_config = ConfigDict(frozen=True)

    status: str
    ahead_by: int = 0
    behind_by: int = 0
    files: tuple[ChangedFile, ...] = ()

    @property
    def complete(self) -> bool:
        return len(self.files) < COMPARE_FILES_CAP


class _ContentFile(BaseModel):
    """`GET /repos/{o}/{r}/contents/{path}` for a file: base64 content, or `none`
    (empty) for one over GitHub's 1 MB limit of this endpoint."""

    type: str
    encoding: str = ""
    content: str = ""
    size: int = 0


class _Viewer(BaseModel):
    """`GET /user`: the account a token acts as."""

    login: str = Field(min_length=1)


class GitHubReview(BaseModel):
    """A submitted review as GitHub lists it; `user` is the author's login, None when
    GitHub lists the review without a user (its author's account was deleted)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    id: int
    commit_id: str | None = None
    body: str | None = None
    state: str = ""
    html_url: str | None = None
    user: str | None = Field(default=None, validation_alias=AliasPath("user", "login"))


def _review_comment(c: ReviewComment) -> dict[str, Any]:
    """A draft review comment; a range names its first line as `start_line` (on the
    same side), as GitHub's multi-line comments do."""
    draft: dict[str, Any] = {"path": c.path, "line": c.line, "side": c.side, "body": c.body}
    if c.start_line is not None and c.start_line < c.line:
        draft |= {"start_line": c.start_line, "start_side": c.side}
    return draft


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    return (parsed.scheme, parsed.host, parsed.port) if parsed.host else None


class GitHubClient:
    """One GitHub (or GitHub Enterprise, or the sandbox fake) account, by token."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        """`clock_ms` dates `retry_at_ms`; the scheduler passes Redis time, tests a fixed one."""
        if not _TOKEN.fullmatch(token):
            # The value is never echoed: a mangled token is still mostly a secret.
            raise ValueError("token must be non-empty printable ASCII without whitespace")
        origin = _origin(base_url)
        if origin is None or origin[0] not in ("http", "https"):
            raise ValueError(f"base_url {base_url!r} must be an http(s) URL")
        self._token = token
        self._login: str | None = None
        self.base_url = base_url.rstrip("/")
        self._origin = origin
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport or httpx.HTTPTransport(retries=0),
            timeout=timeout,
            follow_redirects=False,
            headers=_HEADERS,
        )

    def __repr__(self) -> str:
        return f"GitHubClient(base_url={self.base_url!r}, token=[redacted])"

    def close(self) -> None:
        self._http.close()

    def viewer_login(self) -> str:
        """The login this token acts as (`GET /user`), asked once per client: it is how
        reviewq tells its own reviews from anyone else's. GitHub App installation
        tokens get a 403 ("Resource not accessible by integration") here."""
        if self._login is None:
            self._login = self._call("GET", "/user", _Viewer).login
        return self._login

    def pull_request(self, owner: str, repo: str, number: int) -> PullRequestInfo:
        return self._call("GET", _pr_path(owner, repo, number), PullRequestInfo)

    def list_files(
        self, owner: str, repo: str, number: int, *, max_files: int = GITHUB_FILES_CAP
    ) -> FileListing:
        """Every page up to `max_files`; see `FileListing` for what `truncated` means."""
        if max_files < 1:
            raise ValueError("max_files must be at least 1")
        path = _pr_path(owner, repo, number) + "/files"
        files: list[ChangedFile] = []
        more = False
        for items, has_next in self._pages(path, ChangedFile):
            files.extend(items)
            more = has_next
            if len(files) >= max_files:
                break
        truncated = len(files) > max_files or more or len(files) >= GITHUB_FILES_CAP
        return FileListing(tuple(files[:max_files]), truncated)

    def compare(self, owner: str, repo: str, base: str, head: str) -> Comparison:
        """How `head` relates to `base` and the files it changed since their merge base
        (first page: the file list is not paged). Unknown commits: `GitHubNotFound`."""
        for sha in (base, head):
            if not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha):
                raise ValueError(f"not a commit id: {sha!r}")
        path = f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}/compare/{base}...{head}"
        return self._call("GET", path, Comparison)

    def file_text(
        self, owner: str, repo: str, path: str, ref: str, *, max_bytes: int
    ) -> str | None:
        """A file's text at commit `ref`; None when there is none (404), it is not a
        file, or it is larger than `max_bytes` or not UTF-8."""
        url = f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}/contents/{quote(path)}"
        try:
            response = self._send("GET", url, params={"ref": ref})
        except GitHubNotFound:
            return None
        data = json_or_none(response)
        if not isinstance(data, dict) or data.get("type") != "file":
            return None
        found = self._parse(_ContentFile, data, response, f"GET {httpx.URL(url).path}")
        if found.encoding != "base64" or found.size > max_bytes:
            return None
        try:
            return base64.b64decode(found.content, validate=False).decode()
        except (ValueError, UnicodeDecodeError):
            return None

    def list_reviews(self, owner: str, repo: str, number: int) -> list[GitHubReview]:
        """All reviews, oldest first, as GitHub orders them."""
        path = _pr_path(owner, repo, number) + "/reviews"
        return [item for items, _ in self._pages(path, GitHubReview) for item in items]

    def create_review(
        self,
        owner: str,
        repo: str,
        number: int,
        *,
        commit_id: str,
        body: str,
        comments: Sequence[ReviewComment] = (),
        event: ReviewEvent = "COMMENT",
    ) -> GitHubReview:
        """One submitted review. Not idempotent by itself: see `GitHubSink` for that."""
        path = _pr_path(owner, repo, number) + "/reviews"
        payload: dict[str, Any] = {"commit_id": commit_id, "body": body, "event": event}
        payload["comments"] = [_review_comment(c) for c in comments]
        return self._call("POST", path, GitHubReview, json=payload)

    def _pages(self, path: str, model: type[M]) -> Iterator[tuple[list[M], bool]]:
        """Each page's items and whether GitHub linked a next page, following `Link`."""
        url: str = path
        params: dict[str, int] | None = {"per_page": _PER_PAGE}
        for _ in range(_MAX_PAGES):
            response = self._send("GET", url, params=params)
            data = json_or_none(response)
            if not isinstance(data, list):
                raise GitHubTransportError(response.status_code, f"GET {path}: not a JSON list")
            items = [self._parse(model, item, response, f"GET {path}") for item in data]
            next_url = response.links.get("next", {}).get("url")
            yield items, next_url is not None
            if next_url is None:
                return
            # The token goes only to the configured host, whatever a `Link` header says.
            if _origin(next_url) != self._origin:
                raise GitHubTransportError(None, f"GET {path}: next page is on another host")
            url, params = next_url, None
        raise GitHubTransportError(None, f"GET {path}: more than {_MAX_PAGES} pages; gave up")

    def _call(self, method: str, path: str, model: type[M], *, json: object = None) -> M:
        response = self._send(method, path, json=json)
        return self._parse(model, json_or_none(response), response, f"{method} {path}")

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
        auth = {"Authorization": f"Bearer {self._token}"}
        t0 = time.monotonic()
        try:
            response = self._http.request(method, url, params=params, json=json, headers=auth)
        except httpx.HTTPError as exc:
            sent = not isinstance(exc, _NOT_SENT)
            text = redact(f"{type(exc).__name__}: {exc}", (self._token,))
            raise GitHubTransportError(None, f"{what}: {text}", sent) from None
        ms = round((time.monotonic() - t0) * 1000)
        log.debug("github %s -> %d in %d ms", what, response.status_code, ms)
        if response.is_success:
            return response
        raise error_for_response(response, what, self._clock_ms(), secrets=(self._token,))

    def _parse(self, model: type[M], data: object, response: httpx.Response, what: str) -> M:
        """GitHub's JSON as a model; a shape we do not know is garbage, not a crash."""
        if data is None:
            raise GitHubTransportError(response.status_code, f"{what}: the body is not JSON")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise GitHubTransportError(
                response.status_code,
                f"{what}: unexpected response shape at {where}: {first['msg']}",
            ) from None


def _pr_path(owner: str, repo: str, number: int) -> str:
    if not owner or not repo or number < 1:
        raise ValueError(f"not a pull request: {owner!r}/{repo!r}#{number}")
    return f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}/pulls/{number}"
