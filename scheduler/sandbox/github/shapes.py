"""The fake's JSON objects, each made from GitHub's own example response for it.

`openapi_examples.json` holds the example responses of GitHub's OpenAPI description
(version 2022-11-28; `tests/fixtures/github_openapi/` says where from, and writes the
file). Every object the fake serves starts as a copy of one, with the example's URLs,
names, numbers and ids replaced by the fake's own, and the fields the fake keeps
(state, head, counts, authors) overlaid. So a field GitHub sends that reviewq has
never read is still there, in GitHub's type, and a client that starts reading it is
tested against GitHub's shape rather than against whatever the fake thought of.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote

from scheduler.sandbox.github.history import Comparison, blob_of
from scheduler.sandbox.github.state import FakePull, PostedReview, repo_id
from workers.review.changes import ChangedFile

__all__ = [
    "compare_json",
    "content_json",
    "diff_entry",
    "file_json",
    "pull_json",
    "repo_json",
    "review_json",
    "user_json",
    "viewer_json",
]

_EXAMPLE_HEAD = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
_EXAMPLE_USER = re.compile(r"/octocat(?=$|[/{])")
_BASE_SHA = "0" * 40
# What GitHub's diff-entry says of a file, of all that `ChangedFile` holds.
_DIFF_ENTRY_FIELDS = {
    "filename",
    "status",
    "additions",
    "deletions",
    "changes",
    "previous_filename",
}


@cache
def _examples() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("openapi_examples.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _example(name: str, *keys: str) -> Any:
    """A fresh copy of an example, or of a part of one: callers overlay it."""
    node = _examples()[name]
    for key in keys:
        node = node[key]
    return copy.deepcopy(node)


def _replaced(node: Any, subs: list[tuple[str, str]]) -> Any:
    if isinstance(node, str):
        for old, new in subs:
            node = node.replace(old, new)
        return node
    if isinstance(node, dict):
        return {k: _replaced(v, subs) for k, v in node.items()}
    if isinstance(node, list):
        return [_replaced(v, subs) for v in node]
    return node


def _hosts(base: str) -> list[tuple[str, str]]:
    """The example's GitHub hosts, all served by the fake at `base`."""
    return [
        ("https://api.github.com", base),
        ("https://svn.github.com", base),
        ("https://github.com", base),
    ]


def _node_id(kind: str, number: int) -> str:
    """GitHub's legacy global node id: base64 of "0<len>:<Type><id>" ("04:User1")."""
    return base64.b64encode(f"0{len(kind)}:{kind}{number}".encode()).decode()


def _user_id(login: str) -> int:
    """A stable numeric id per login, as GitHub gives every account one."""
    return int(hashlib.sha1(login.lower().encode()).hexdigest()[:7], 16)


def user_json(login: str | None, base: str) -> dict[str, Any] | None:
    """GitHub's simple-user for `login`; None for none (a deleted account)."""
    if login is None:
        return None
    user: dict[str, Any] = _replaced(_example("pull-request", "user"), _hosts(base))
    kind = "Bot" if login.endswith("[bot]") else "User"
    user_id = _user_id(login)
    for key, value in user.items():
        if isinstance(value, str) and key.endswith("url"):
            user[key] = _EXAMPLE_USER.sub("/" + quote(login, safe=""), value)
    user.update(login=login, id=user_id, node_id=_node_id(kind, user_id), type=kind)
    user["avatar_url"] = f"{base}/avatars/u/{user_id}"
    return user


def viewer_json(login: str, base: str) -> dict[str, Any]:
    """`GET /user`: the example's public profile under the token's login."""
    viewer: dict[str, Any] = _replaced(_example("user"), _hosts(base))
    simple = user_json(login, base)
    assert simple is not None
    viewer.update(simple, name=login, email=None, bio=None, twitter_username=None)
    return viewer


def repo_json(owner: str, repo: str, base: str) -> dict[str, Any]:
    """GitHub's repository object for `owner/repo`, from the example's head repository."""
    subs = [*_hosts(base), ("octocat/Hello-World", f"{owner}/{repo}")]
    data: dict[str, Any] = _replaced(_example("pull-request", "head", "repo"), subs)
    number = repo_id(owner, repo)
    data.update(id=number, node_id=_node_id("Repository", number), name=repo)
    data.update(full_name=f"{owner}/{repo}", owner=user_json(owner, base), default_branch="main")
    return data


def _branch(repo: tuple[str, str], ref: str, sha: str, base: str) -> dict[str, Any]:
    owner, name = repo
    return {
        "label": f"{owner}:{ref}",
        "ref": ref,
        "repo": repo_json(owner, name, base),
        "sha": sha,
        "user": user_json(owner, base),
    }


def pull_json(pull: FakePull, base: str) -> dict[str, Any]:
    """GitHub's pull-request object: the example, with this PR's state overlaid."""
    subs = [
        *_hosts(base),
        ("octocat/Hello-World", f"{pull.owner}/{pull.repo}"),
        ("/1347", f"/{pull.number}"),
        (_EXAMPLE_HEAD, pull.head_sha),
    ]
    data: dict[str, Any] = _replaced(_example("pull-request"), subs)
    number = pull.pr_id
    files = pull.files
    data.update(id=number, node_id=_node_id("PullRequest", number), number=pull.number)
    data.update(state=pull.state, draft=pull.draft, title=pull.title, body=pull.body)
    data.update(user=user_json(pull.author, base), author_association="CONTRIBUTOR")
    data["head"] = _branch(pull.head_repo, "feature", pull.head_sha, base)
    data["base"] = _branch((pull.owner, pull.repo), "main", _BASE_SHA, base)
    # The example's review requests name a team without the `type` its own schema
    # requires; the fake's PRs have no review requests.
    data.update(requested_reviewers=[], requested_teams=[], merged=False, merged_by=None)
    data.update(merged_at=None, merge_commit_sha=None, auto_merge=None)
    data["closed_at"] = data["updated_at"] if pull.state == "closed" else None
    data["mergeable"] = None if pull.state == "closed" else data["mergeable"]
    data.update(commits=len(pull.files_by_sha), changed_files=len(files))
    data["additions"] = sum(f.additions for f in files)
    data["deletions"] = sum(f.deletions for f in files)
    return data


def file_json(pull: FakePull, f: ChangedFile, base: str, max_patch_chars: int) -> dict[str, Any]:
    """GitHub's diff-entry; `patch` is left out, as GitHub does, for a binary file and
    for one whose diff is larger than `max_patch_chars`."""
    return diff_entry((pull.owner, pull.repo), pull.head_sha, f, base, max_patch_chars)


def diff_entry(
    repo: tuple[str, str], sha: str, f: ChangedFile, base: str, max_patch_chars: int
) -> dict[str, Any]:
    """A file as GitHub lists it at commit `sha`, in a PR's files or a comparison."""
    owner, name = repo
    data: dict[str, Any] = {k: v for k, v in _example("diff-entry").items() if k != "patch"}
    path = quote(f.filename, safe="/")
    blob = f"{base}/{owner}/{name}/blob/{sha}/{path}"
    data.update(f.model_dump(include=_DIFF_ENTRY_FIELDS, exclude_none=True))
    data["sha"] = blob_of(f)
    data["blob_url"], data["raw_url"] = blob, blob.replace("/blob/", "/raw/", 1)
    data["contents_url"] = f"{base}/repos/{owner}/{name}/contents/{path}?ref={sha}"
    if f.patch is not None and len(f.patch) <= max_patch_chars:
        data["patch"] = f.patch
    return data


def review_json(review: PostedReview, base: str) -> dict[str, Any]:
    """GitHub's pull-request-review. A PENDING review has no `submitted_at`; a review
    whose commit is gone has a null `commit_id`; a deleted author a null `user`."""
    data: dict[str, Any] = _example("pull-request-review")
    pr = f"{base}/{review.owner}/{review.repo}/pull/{review.number}"
    api = f"{base}/repos/{review.owner}/{review.repo}/pulls/{review.number}"
    html = f"{pr}#pullrequestreview-{review.id}"
    data.update(id=review.id, node_id=_node_id("PullRequestReview", review.id))
    data.update(user=user_json(review.user, base), body=review.body, state=review.state)
    data.update(html_url=html, pull_request_url=api, commit_id=review.commit_id)
    data["_links"] = {"html": {"href": html}, "pull_request": {"href": api}}
    data["author_association"] = "NONE"
    if review.submitted_at is None:
        del data["submitted_at"]
    else:
        data["submitted_at"] = review.submitted_at
    return data


def _commit_json(repo: tuple[str, str], sha: str, base: str) -> dict[str, Any]:
    """GitHub's commit object from the comparison example's base commit, at `sha`."""
    owner, name = repo
    example = _example("commit-comparison", "base_commit")
    subs = [*_hosts(base), ("octocat/Hello-World", f"{owner}/{name}"), (example["sha"], sha)]
    data: dict[str, Any] = _replaced(example, subs)
    data["node_id"] = base64.b64encode(f"06:Commit{sha}".encode()).decode()
    data["author"] = data["committer"] = user_json(owner, base)
    data["files"] = []
    return data


def compare_json(
    repo: tuple[str, str], found: Comparison, basehead: str, head: str, base: str, cap: int
) -> dict[str, Any]:
    """GitHub's commit-comparison of `basehead` (`base...head` as asked)."""
    owner, name = repo
    data: dict[str, Any] = _example("commit-comparison")
    site, api = f"{base}/{owner}/{name}", f"{base}/repos/{owner}/{name}"
    data.update(url=f"{api}/compare/{basehead}", html_url=f"{site}/compare/{basehead}")
    data.update(permalink_url=f"{site}/compare/{owner}:{basehead.replace('...', f'...{owner}:')}")
    data.update(diff_url=f"{site}/compare/{basehead}.diff")
    data.update(patch_url=f"{site}/compare/{basehead}.patch")
    data["base_commit"] = _commit_json(repo, basehead.split("...")[0], base)
    data["merge_base_commit"] = _commit_json(repo, found.merge_base or _BASE_SHA, base)
    data.update(status=found.status, ahead_by=found.ahead_by, behind_by=found.behind_by)
    data["total_commits"] = len(found.commits)
    data["commits"] = [_commit_json(repo, sha, base) for sha in found.commits]
    data["files"] = [diff_entry(repo, head, f, base, cap) for f in found.files]
    return data


def content_json(
    repo: tuple[str, str], path: str, ref: str, text: str, base: str
) -> dict[str, Any]:
    """GitHub's content-file: the text as base64 in lines of 60, as GitHub wraps it."""
    owner, name = repo
    raw = text.encode()
    encoded = base64.b64encode(raw).decode()
    blob = hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()
    quoted = quote(path, safe="/")
    api, site = f"{base}/repos/{owner}/{name}", f"{base}/{owner}/{name}"
    data: dict[str, Any] = _example("content-file")
    data.update(name=path.rsplit("/", 1)[-1], path=path, sha=blob, size=len(raw))
    data["content"] = "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))
    data.update(url=f"{api}/contents/{quoted}?ref={ref}", git_url=f"{api}/git/blobs/{blob}")
    data.update(html_url=f"{site}/blob/{ref}/{quoted}", download_url=f"{site}/raw/{ref}/{quoted}")
    data["_links"] = {"git": data["git_url"], "self": data["url"], "html": data["html_url"]}
    return data
