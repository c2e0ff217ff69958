"""The fake GitHub judged by GitHub's own OpenAPI description (version 2022-11-28).

Every test in the suite has its exchanges checked (tests/github_exchanges.py); this
file makes sure every route and every fault is among them, whatever the other tests
happen to do, and checks what a schema cannot say: the fields the fake used to lack,
null authors and commits, PENDING reviews, paging by repository id, large files, the
headers GitHub insists on, and the objects built from GitHub's own examples.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from github_exchanges import check_exchange
from github_openapi import SUBSET, description, to_json_schema

from scheduler.sandbox.github import FakeGitHubConfig, FakeGitHubServer, serve_fake_github
from workers.forge.github import GitHubClient, GitHubNotFound, GitHubServerError
from workers.review.changes import ChangedFile

CLIENT_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "fake-github-probe",
}
PATCH = "@@ -1,3 +1,4 @@\n a = 1\n-b = 2\n+b = 3\n+c = 4\n d = 5"
PR = "/repos/octo/app/pulls/1"
OPERATION = "/repos/{owner}/{repo}/pulls/{pull_number}"
EXAMPLES = Path(__file__).parents[1] / "scheduler" / "sandbox" / "github" / "openapi_examples.json"


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[FakeGitHubServer, Path]]:
    """A fake with a log of its own, so a test reads exactly its exchanges; each is
    checked against the description when the test ends, as the suite's are."""
    with serve_fake_github(FakeGitHubConfig(exchange_log=str(tmp_path))) as server:
        files = [
            ChangedFile(filename="a.py", additions=2, deletions=1, changes=3, patch=PATCH),
            ChangedFile(filename="logo.png", status="added"),
            ChangedFile(filename="new.py", status="renamed", previous_filename="old.py"),
        ]
        server.control.add_pr("octo", "app", 1, "head1", files=files, body="Fixes it")
        yield server, tmp_path
    assert [p for record in records(tmp_path) for p in check_exchange(record)] == []


def call(fake: FakeGitHubServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**CLIENT_HEADERS, "Authorization": f"Bearer {fake.token}"}
    headers.update(kwargs.pop("headers", {}))
    return httpx.request(method, fake.url + path, headers=headers, timeout=10, **kwargs)


def records(log_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for p in log_dir.glob("*.jsonl") for line in p.read_text().splitlines()
    ]


def _drive_faults(fake: FakeGitHubServer) -> None:
    """Each rate limit in each form, on each route."""
    review = {"commit_id": "head1", "body": "b", "event": "COMMENT"}
    for path in ("/user", PR, PR + "/files", PR + "/reviews"):
        for fault in (
            {"secondary_rate_limit": 1, "secondary_status": 403},
            {"secondary_rate_limit": 1, "secondary_status": 429, "retry_after_s": None},
            {"secondary_rate_limit": 1, "secondary_wording": "abuse", "secondary_status": 403},
            {"primary_rate_limit": 1, "primary_status": 403},
            {"primary_rate_limit": 1, "primary_status": 429},
        ):
            fake.control.faults(**fault)
            assert call(fake, "GET", path).status_code in (403, 429)
    fake.control.faults(secondary_rate_limit=1, secondary_wording="secondary")
    assert call(fake, "POST", PR + "/reviews", json=review).status_code == 403
    fake.control.faults(review_5xx=1, review_5xx_after_create=1)
    assert [call(fake, "POST", PR + "/reviews", json=review).status_code for _ in "12"] == [
        502,
        502,
    ]


def _drive_refusals(fake: FakeGitHubServer) -> None:
    """What GitHub refuses before the route, and what the review route refuses."""
    assert call(fake, "GET", PR, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert call(fake, "GET", PR, headers={"X-GitHub-Api-Version": "2099-01-01"}).status_code == 400
    assert call(fake, "GET", PR, headers={"Accept": "text/html"}).status_code == 415
    assert call(fake, "GET", PR, headers={"User-Agent": ""}).status_code == 403
    assert call(fake, "GET", "/repos/octo/app/pulls/9/files").status_code == 404
    assert call(fake, "POST", PR + "/reviews", content=b"{").status_code == 400
    unanchored = {
        "body": "b",
        "event": "COMMENT",
        "comments": [{"path": "a.py", "line": 99, "body": "x"}],
    }
    assert call(fake, "POST", PR + "/reviews", json=unanchored).status_code == 422


def _drive_client(fake: FakeGitHubServer) -> None:
    """reviewq's own client through every call it makes, pages and all."""
    client = GitHubClient(fake.token, base_url=fake.url)
    assert client.viewer_login() == "reviewq-sandbox[bot]"
    assert client.pull_request("octo", "app", 1).head_sha == "head1"
    fake.control.add_pr("octo", "app", 2, "head2", synthetic_files=250)
    assert len(client.list_files("octo", "app", 2).files) == 250  # three pages, by id
    client.create_review("octo", "app", 1, commit_id="head1", body="hello")
    fake.control.add_review("octo", "app", 1, user=None, body="ghost", commit_gone=True)
    assert [r.user for r in client.list_reviews("octo", "app", 1)] == ["reviewq-sandbox[bot]", None]
    pending = {"commit_id": "head1", "comments": [{"path": "a.py", "position": 3, "body": "p"}]}
    assert call(fake, "POST", PR + "/reviews", json=pending).status_code == 200
    assert call(fake, "POST", PR + "/reviews", json=pending).status_code == 422  # one pending
    assert call(fake, "GET", PR + "/reviews", params={"per_page": 1, "page": 2}).status_code == 200
    _drive_history(fake, client)


def _drive_history(fake: FakeGitHubServer, client: GitHubClient) -> None:
    """The calls an incremental review makes: compare two heads, read a file at one."""
    one = [ChangedFile(filename="a.py", patch=PATCH), ChangedFile(filename="b.py", patch=PATCH)]
    fake.control.add_pr("octo", "app", 4, "a1" * 20, files=one, contents={".gitattributes": "x"})
    two = [one[0], ChangedFile(filename="b.py", patch=PATCH + "\n+e = 6")]
    fake.control.add_pr("octo", "app", 4, "b2" * 20, files=two)
    found = client.compare("octo", "app", "a1" * 20, "b2" * 20)
    assert found.status == "ahead" and [f.filename for f in found.files] == ["b.py"]
    assert client.compare("octo", "app", "b2" * 20, "a1" * 20).status == "behind"
    fake.control.add_pr("octo", "app", 4, "c3" * 20, files=one, force=True)
    assert client.compare("octo", "app", "b2" * 20, "c3" * 20).status == "diverged"
    with pytest.raises(GitHubNotFound):
        client.compare("octo", "app", "d4" * 20, "c3" * 20)
    assert client.file_text("octo", "app", ".gitattributes", "a1" * 20, max_bytes=99) == "x"
    assert client.file_text("octo", "app", ".gitattributes", "b2" * 20, max_bytes=99) is None
    fake.control.faults(contents_5xx=1)
    with pytest.raises(GitHubServerError):
        client.file_text("octo", "app", ".gitattributes", "a1" * 20, max_bytes=99)


def test_every_route_and_fault_answers_as_github_documents(
    logged: tuple[FakeGitHubServer, Path],
) -> None:
    fake, log_dir = logged
    _drive_client(fake)
    _drive_refusals(fake)
    _drive_faults(fake)
    seen = records(log_dir)
    assert [p for record in seen for p in check_exchange(record)] == []
    pairs = {(r["method"], r["operation"], r["status"]) for r in seen}
    pr, files, reviews = (OPERATION + tail for tail in ("", "/files", "/reviews"))
    expected = {("GET", "/user", s) for s in (200, 403, 429)}
    expected |= {("GET", pr, s) for s in (200, 400, 401, 403, 415, 429)}
    expected |= {("GET", files, s) for s in (200, 403, 404, 429)}
    expected |= {("GET", reviews, s) for s in (200, 403, 429)}
    expected |= {("POST", reviews, s) for s in (200, 400, 403, 422, 502)}
    compare, contents = (
        f"/repos/{{owner}}/{{repo}}/{t}" for t in ("compare/{basehead}", "contents/{path}")
    )
    expected |= {("GET", compare, s) for s in (200, 404)}
    expected |= {("GET", contents, s) for s in (200, 404, 502)}
    assert expected <= pairs, sorted(expected - pairs)
    asked = {
        (r["method"], r["operation"])
        for r in seen
        if r["request"]["headers"]["user-agent"].startswith("reviewq")
    }
    assert asked == {
        ("GET", "/user"),
        ("GET", pr),
        ("GET", files),
        ("GET", reviews),
        ("POST", reviews),
        ("GET", compare),
        ("GET", contents),
    }
    print(f"\n{len(seen)} exchanges, {len(pairs)} distinct operation and status pairs, all valid")


# --- what a schema cannot say ---------------------------------------------------------


def test_a_pr_has_every_field_github_requires_and_its_fork(
    logged: tuple[FakeGitHubServer, Path],
) -> None:
    fake, _ = logged
    pr = call(fake, "GET", PR).json()
    schema = description().document["components"]["schemas"]["pull-request"]
    assert set(schema["required"]) <= set(pr)
    for key in ("node_id", "body", "mergeable", "merge_commit_sha", "_links", "auto_merge"):
        assert key in pr
    assert pr["body"] == "Fixes it" and pr["merge_commit_sha"] is None
    assert pr["head"]["repo"]["full_name"] == pr["base"]["repo"]["full_name"] == "octo/app"
    assert pr["head"]["user"]["login"] == "octo" and pr["head"]["repo"]["owner"]["login"] == "octo"
    assert pr["_links"]["self"]["href"] == fake.url + PR
    fake.control.add_pr("octo", "app", 3, "f00d", head_repo="someone/app-fork")
    fork = call(fake, "GET", "/repos/octo/app/pulls/3").json()
    assert fork["head"]["repo"]["full_name"] == "someone/app-fork"
    assert fork["head"]["label"] == "someone:feature" and fork["body"] is None
    assert fork["head"]["repo"]["id"] != fork["base"]["repo"]["id"]


def test_reviews_may_have_no_user_no_commit_or_no_submission(
    logged: tuple[FakeGitHubServer, Path],
) -> None:
    fake, _ = logged
    fake.control.add_review("octo", "app", 1, user=None, body="gone", commit_gone=True)
    pending = call(fake, "POST", PR + "/reviews", json={"body": "draft"}).json()
    assert pending["state"] == "PENDING" and "submitted_at" not in pending
    ghost, mine = call(fake, "GET", PR + "/reviews").json()
    assert ghost["user"] is None and ghost["commit_id"] is None and "submitted_at" in ghost
    assert mine["id"] == pending["id"] and "submitted_at" not in mine
    assert mine["_links"]["html"]["href"] == mine["html_url"]


def test_paging_links_name_the_repository_by_id_and_are_served(
    logged: tuple[FakeGitHubServer, Path],
) -> None:
    fake, _ = logged
    fake.control.add_pr("octo", "app", 2, "h", synthetic_files=5)
    first = call(fake, "GET", "/repos/octo/app/pulls/2/files", params={"per_page": 2})
    next_url = first.links["next"]["url"]
    repo_id = call(fake, "GET", PR).json()["base"]["repo"]["id"]
    assert next_url == f"{fake.url}/repositories/{repo_id}/pulls/2/files?per_page=2&page=2"
    second = httpx.get(
        next_url, headers={**CLIENT_HEADERS, "Authorization": f"Bearer {fake.token}"}
    )
    assert [f["filename"] for f in second.json()] == ["src/module_00002.py", "src/module_00003.py"]
    assert call(fake, "GET", "/repositories/1/pulls/2/files").status_code == 404


def test_a_large_file_comes_without_its_patch_but_takes_comments(tmp_path: Path) -> None:
    config = FakeGitHubConfig(max_patch_chars=20, exchange_log=str(tmp_path))
    with serve_fake_github(config) as fake:
        fake.control.add_pr(
            "octo", "app", 1, "head1", files=[ChangedFile(filename="a.py", patch=PATCH)]
        )
        (listed,) = call(fake, "GET", PR + "/files").json()
        comment = {"path": "a.py", "line": 3, "body": "on the hidden diff"}
        review = {"body": "b", "event": "COMMENT", "comments": [comment]}
        posted = call(fake, "POST", PR + "/reviews", json=review)
    assert "patch" not in listed and listed["changes"] == 0
    assert posted.status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Accept": "application/json"}, 200),
        ({"Accept": "application/vnd.github.v3+json"}, 200),
        ({"Accept": "application/vnd.github.full+json, */*;q=0.1"}, 200),
        ({"X-GitHub-Api-Version": "2022-11-28"}, 200),
        ({"Accept": "application/vnd.github.diff"}, 415),
        ({"X-GitHub-Api-Version": "2021-01-01"}, 400),
        ({"User-Agent": ""}, 403),
    ],
)
def test_the_headers_github_insists_on(
    logged: tuple[FakeGitHubServer, Path], headers: dict[str, str], status: int
) -> None:
    fake, _ = logged
    reply = call(fake, "GET", PR, headers=headers)
    assert reply.status_code == status
    if status == 403:  # GitHub's front end, in plain text
        assert reply.headers["content-type"].startswith("text/plain")
        assert "User-Agent" in reply.text
    elif status != 200:
        assert reply.json()["documentation_url"].startswith("https://docs.github.com/")


# --- the description itself -----------------------------------------------------------


def test_the_fakes_examples_are_githubs() -> None:
    """`openapi_examples.json` is what the extraction script takes from the subset."""
    path = SUBSET.parent / "extract.py"
    spec = importlib.util.spec_from_file_location("github_openapi_extract", path)
    assert spec is not None and spec.loader is not None
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    assert json.loads(EXAMPLES.read_text()) == extract.fake_examples(description().document)


def test_githubs_examples_meet_its_schemas_but_one() -> None:
    """GitHub's own example PR names a team without the `type` its schema requires;
    the fake gives its PRs no requested teams. Every other example validates."""
    examples = description().document["components"]["examples"]
    checks = {
        "pull-request": ("GET", OPERATION),
        "diff-entry-items": ("GET", OPERATION + "/files"),
        "pull-request-review-items": ("GET", OPERATION + "/reviews"),
        "pull-request-review": ("POST", OPERATION + "/reviews"),
        "private-user-response-with-public-profile-information": ("GET", "/user"),
        "private-user-response-with-public-and-private-profile-information": ("GET", "/user"),
        "commit-comparison": ("GET", "/repos/{owner}/{repo}/compare/{basehead}"),
        "content-file-response-if-content-is-a-file": (
            "GET",
            "/repos/{owner}/{repo}/contents/{path}",
        ),
    }
    found = {
        name: description().response_errors(method, path, 200, examples[name]["value"])
        for name, (method, path) in checks.items()
    }
    assert found.pop("pull-request") == ["requested_teams/0: 'type' is a required property"]
    assert all(errors == [] for errors in found.values()), found


def test_nullable_becomes_a_null_type_or_branch() -> None:
    assert to_json_schema({"type": "string", "nullable": True}) == {"type": ["string", "null"]}
    assert to_json_schema({"type": "string", "enum": ["a"], "nullable": True, "example": "a"}) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    assert to_json_schema({"allOf": [{"$ref": "#/x"}], "nullable": True}) == {
        "anyOf": [{"allOf": [{"$ref": "#/x"}]}, {"type": "null"}]
    }
    wrong = description().response_errors("GET", OPERATION + "/files", 200, [{"filename": 1}])
    assert any("'sha' is a required property" in e for e in wrong)
