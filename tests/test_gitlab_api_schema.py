"""The fake GitLab judged by GitLab's own API documentation.

Every test in the suite has its exchanges checked (tests/gitlab_exchanges.py); this
file makes sure every route and every fault is among them, whatever the other tests
happen to do, shows that the checks catch what GitLab would not send, and checks what
a schema cannot say: nulls where GitLab sends them, GitLab's paging, one account's id
everywhere, and the objects built from GitLab's own examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from gitlab_api import EXAMPLES, reference
from gitlab_exchanges import check_exchange, paging_problems
from starlette.requests import Request

from scheduler.sandbox.gitlab import FakeGitLabConfig, FakeGitLabServer, MrFile, serve_fake_gitlab
from scheduler.sandbox.gitlab.paging import page
from workers.forge.gitlab import GitLabClient

PROJECT, IID = "grp/sub/app", 3
HEADS = ["a1" * 20, "b2" * 20, "c3" * 20]
PATCH = "@@ -1,4 +1,5 @@\n a = 1\n-b = 2\n+b = 3\n+c = 4\n d = 5\n e = 6\n"
MR = f"/api/v4/projects/{quote(PROJECT, safe='')}/merge_requests/{IID}"
RAW = f"/api/v4/projects/{quote(PROJECT, safe='')}/repository/files/app.py/raw"
COMPARE = f"/api/v4/projects/{quote(PROJECT, safe='')}/repository/compare"
PACKAGE_EXAMPLES = (
    Path(__file__).parents[1] / "scheduler" / "sandbox" / "gitlab" / "doc_examples.json"
)


def mr_files(n: int) -> list[MrFile]:
    """`n` files: a small one, a collapsed one, a too-large one, a generated one..."""
    kinds = [
        MrFile(
            old_path="app.py", new_path="app.py", diff=PATCH, old_content="a\n", new_content="b\n"
        ),
        MrFile(old_path="mid.txt", new_path="mid.txt", diff="@@ -1 +1 @@\n" + "+m\n" * 200),
        MrFile(old_path="huge.txt", new_path="huge.txt", diff="@@ -1 +1 @@\n" + "+h\n" * 2000),
        MrFile(old_path="gen.pb.go", new_path="gen.pb.go", diff=PATCH, generated_file=True),
        MrFile(old_path="old.py", new_path="new.py", diff="", renamed_file=True),
        MrFile(
            old_path="gone.py", new_path="gone.py", diff="@@ -1 +0,0 @@\n-x\n", deleted_file=True
        ),
    ]
    return kinds[:n]


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[FakeGitLabServer, Path]]:
    """A fake with small diff limits and a log of its own, so a test reads exactly its
    exchanges; each is checked against GitLab's docs when the test ends."""
    config = FakeGitLabConfig(collapse_chars=300, too_large_chars=3000, exchange_log=str(tmp_path))
    with serve_fake_gitlab(config) as server:
        for n, head in enumerate(HEADS, start=4):
            server.control.add_mr(PROJECT, IID, head, files=mr_files(n), title="Add c")
        yield server, tmp_path
    assert [p for record in records(tmp_path) for p in check_exchange(record)] == []


def call(fake: FakeGitLabServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"PRIVATE-TOKEN": fake.token, "User-Agent": "fake-gitlab-probe"}
    headers.update(kwargs.pop("headers", {}))
    return httpx.request(method, fake.url + path, headers=headers, timeout=10, **kwargs)


def records(log_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for p in log_dir.glob("*.jsonl") for line in p.read_text().splitlines()
    ]


def position(line: int, old_line: int | None = None) -> dict[str, Any]:
    pos: dict[str, Any] = {
        "position_type": "text",
        "base_sha": "0" * 40,
        "start_sha": "0" * 40,
        "head_sha": HEADS[-1],
        "old_path": "app.py",
        "new_path": "app.py",
        "new_line": line,
    }
    if old_line is not None:
        pos["old_line"] = old_line
    return pos


def _drive_routes(fake: FakeGitLabServer) -> None:
    """Every route, answered and refused."""
    assert call(fake, "GET", "/api/v4/user").status_code == 200
    bearer = {"Authorization": f"Bearer {fake.token}", "PRIVATE-TOKEN": ""}  # blank: none
    assert call(fake, "GET", "/api/v4/user", headers=bearer).status_code == 200
    assert call(fake, "GET", MR, params={"include_diverged_commits_count": "true"}).is_success
    for tail in ("/versions", "/diffs", "/discussions", "/notes"):
        for number in ("1", "2", "9"):
            got = call(fake, "GET", MR + tail, params={"per_page": "2", "page": number})
            assert got.status_code == 200
    newest = call(fake, "GET", MR + "/versions").json()[0]["id"]
    assert call(fake, "GET", f"{MR}/versions/{newest}").status_code == 200
    assert call(fake, "GET", f"{MR}/versions/1").status_code == 404
    thread = {"body": "b is 3 now", "position": position(3)}
    assert call(fake, "POST", MR + "/discussions", json=thread).status_code == 201
    removed = {"body": "b was 2", "position": {**position(0), "new_line": None, "old_line": 2}}
    del removed["position"]["new_line"]
    assert call(fake, "POST", MR + "/discussions", json=removed).status_code == 201
    off = {"body": "nowhere", "position": position(90)}
    assert call(fake, "POST", MR + "/discussions", json=off).status_code == 400
    assert call(fake, "POST", MR + "/notes", json={"body": " "}).status_code == 400
    assert call(fake, "POST", MR + "/notes", json={"body": "Summary"}).status_code == 201
    assert call(fake, "GET", RAW, params={"ref": HEADS[0]}).status_code == 200
    assert call(fake, "GET", RAW, params={"ref": "f" * 40}).status_code == 404
    compared = call(
        fake, "GET", COMPARE, params={"from": HEADS[0], "to": HEADS[2], "straight": "true"}
    )
    assert compared.status_code == 200
    assert call(fake, "GET", COMPARE, params={"from": "f" * 40, "to": HEADS[2]}).status_code == 404
    assert call(fake, "GET", MR.replace(f"/{IID}", "/999")).status_code == 404
    assert call(fake, "GET", MR.replace("grp%2Fsub", "grp%2Fnone")).status_code == 404
    assert call(fake, "GET", MR + "/approvals").status_code == 404


def _drive_faults(fake: FakeGitLabServer) -> None:
    """Each fault, each 401."""
    assert (
        call(fake, "GET", "/api/v4/user", headers={"PRIVATE-TOKEN": "glpat-wrong"}).status_code
        == 401
    )
    assert httpx.get(fake.url + MR, timeout=10).status_code == 401
    for retry_after in (1, None):
        fake.control.faults(rate_limit=1, retry_after_s=retry_after, reset_in_s=5)
        assert call(fake, "GET", MR + "/diffs").status_code == 429
    fake.control.faults(server_error=1)
    assert call(fake, "GET", MR).status_code == 502
    fake.control.faults(after_create=1)
    assert call(fake, "POST", MR + "/notes", json={"body": "stored, then 502"}).status_code == 502
    fake.control.faults(note_after_create=1)
    assert call(fake, "POST", MR + "/notes", json={"body": "stored again"}).status_code == 502
    fake.control.faults(slow=1, slow_s=0.05)
    assert call(fake, "GET", "/api/v4/user").status_code == 200
    fake.control.faults(compare_timeout=1)
    assert call(fake, "GET", COMPARE, params={"from": HEADS[0], "to": HEADS[1]}).json()[
        "compare_timeout"
    ]


def test_every_route_and_fault_answers_as_gitlab_documents(
    logged: tuple[FakeGitLabServer, Path],
) -> None:
    fake, log_dir = logged
    _drive_routes(fake)
    _drive_faults(fake)
    seen = {(r["operation"], r["status"]) for r in records(log_dir)}
    every_operation = {(op, 200 if op.startswith("GET") else 201) for op in reference().operations}
    assert every_operation - seen == set()
    refusals = {400, 401, 404, 429, 502}
    assert refusals <= {status for _, status in seen}
    assert [p for record in records(log_dir) for p in check_exchange(record)] == []


def _first(found: list[dict[str, Any]], operation: str, status: int) -> dict[str, Any]:
    return next(r for r in found if r["operation"] == operation and r["status"] == status)


def _last(found: list[dict[str, Any]], operation: str, status: int) -> dict[str, Any]:
    return [r for r in found if r["operation"] == operation and r["status"] == status][-1]


def test_the_checks_catch_what_gitlab_would_not_send(
    logged: tuple[FakeGitLabServer, Path],
) -> None:
    """A check that passes everything referees nothing: each doctored exchange fails."""
    fake, log_dir = logged
    _drive_routes(fake)
    _drive_faults(fake)
    for tail in ("/discussions", "/notes"):
        assert call(fake, "GET", MR + tail, params={"per_page": "2"}).headers["x-next-page"]
    found = records(log_dir)
    listing = _last(found, "GET /projects/:id/merge_requests/:iid/discussions", 200)
    notes = _last(found, "GET /projects/:id/merge_requests/:iid/notes", 200)
    unauthorized = _first(found, "GET /user", 401)
    limited = _first(found, "GET /projects/:id/merge_requests/:iid/diffs", 429)
    posted = _first(found, "POST /projects/:id/merge_requests/:iid/notes", 201)

    def fails(record: dict[str, Any], change: Any) -> bool:
        doctored = json.loads(json.dumps(record))
        change(doctored)
        return check_exchange(doctored) != []

    plain = next(i for i, n in enumerate(notes["response"]["json"]) if n["type"] is None)
    assert check_exchange(listing) == [] and check_exchange(notes) == []
    assert fails(listing, lambda r: r["response"]["json"][0]["notes"][0]["author"].pop("web_url"))
    assert fails(listing, lambda r: r["response"]["json"][0].update(id="not-a-sha"))
    assert fails(notes, lambda r: r["response"]["json"][plain].update(position=None))
    assert fails(notes, lambda r: r["response"]["json"][plain].pop("resolved_by"))
    assert fails(notes, lambda r: r["response"]["headers"].pop("x-total-pages"))
    decoded = lambda r: r["response"]["headers"].update(  # noqa: E731
        link=r["response"]["headers"]["link"].replace("%2F", "/")
    )
    assert fails(notes, decoded)  # the old fake's links: a client following them got 404
    assert fails(unauthorized, lambda r: r["response"].update(json={"message": "401"}))
    assert fails(limited, lambda r: r["response"]["headers"].pop("ratelimit-limit"))
    assert fails(limited, lambda r: r["response"]["headers"].update({"retry-after": "soon"}))
    as_client = lambda r: r["request"]["headers"].update({"user-agent": "reviewq"})  # noqa: E731
    assert not fails(posted, as_client)  # as it was, a client's request passes
    assert check_exchange(unauthorized) == [] and check_exchange(limited) == []
    assert fails(posted, lambda r: (as_client(r), r["request"].update(auth=None)))
    assert fails(posted, lambda r: (as_client(r), r["request"]["json"].update(note="x")))
    assert fails(posted, lambda r: (as_client(r), r["request"]["query"].update(private_token="t")))


def test_nulls_and_absences_where_gitlab_has_them(logged: tuple[FakeGitLabServer, Path]) -> None:
    fake, _ = logged
    on_removed = {**position(0), "old_line": 2}
    del on_removed["new_line"]
    thread = call(fake, "POST", MR + "/discussions", json={"body": "was 2", "position": on_removed})
    note = call(fake, "POST", MR + "/notes", json={"body": "Summary"}).json()
    diff_note = thread.json()["notes"][0]
    assert diff_note["type"] == "DiffNote" and diff_note["commit_id"] is None
    assert diff_note["position"]["new_line"] is None and diff_note["position"]["old_line"] == 2
    assert diff_note["position"]["line_range"] is None
    assert note["type"] is None and "position" not in note and "commit_id" not in note
    assert note["resolvable"] and note["resolved_by"] is None and note["resolved_at"] is None
    general = call(fake, "POST", MR + "/discussions", json={"body": "on the MR"}).json()
    assert not general["individual_note"] and general["notes"][0]["type"] == "DiscussionNote"
    mr = call(fake, "GET", MR).json()
    assert mr["assignee"] is None and mr["merged_by"] is None and mr["closed_at"] is None
    assert mr["description"] is None and mr["pipeline"] is None
    assert "diverged_commits_count" not in mr
    asked = call(fake, "GET", MR, params={"include_diverged_commits_count": "true"}).json()
    assert asked["diverged_commits_count"] == 0
    fake.control.add_mr(PROJECT, IID, HEADS[-1], files=mr_files(6), state="merged")
    merged = call(fake, "GET", MR).json()
    assert merged["merged_by"]["username"] == merged["author"]["username"]
    assert merged["merged_at"] is not None and merged["detailed_merge_status"] == "not_open"


def test_one_account_has_one_id_everywhere(logged: tuple[FakeGitLabServer, Path]) -> None:
    fake, _ = logged
    me = call(fake, "GET", "/api/v4/user").json()
    note = call(fake, "POST", MR + "/notes", json={"body": "Summary"}).json()
    assert (me["id"], me["username"]) == (note["author"]["id"], note["author"]["username"])
    listed = call(fake, "GET", MR + "/notes").json()
    assert [n["author"]["id"] for n in listed] == [me["id"]]


def test_paging_follows_gitlabs_headers_and_links(logged: tuple[FakeGitLabServer, Path]) -> None:
    fake, _ = logged
    middle = call(fake, "GET", MR + "/versions", params={"page": "2", "per_page": "1"})
    h = middle.headers
    assert (h["x-page"], h["x-per-page"], h["x-total"], h["x-total-pages"]) == ("2", "1", "3", "3")
    assert (h["x-prev-page"], h["x-next-page"]) == ("1", "3")
    rels = [part.split('rel="')[1].rstrip('"') for part in h["link"].split(", ")]
    assert rels == ["prev", "next", "first", "last"]
    assert f"{MR}/versions?page=3&per_page=1" in h["link"]  # the path as sent, %2F kept
    nxt = httpx.get(middle.links["next"]["url"], headers={"PRIVATE-TOKEN": fake.token})
    assert [v["head_commit_sha"] for v in nxt.json()] == [HEADS[0]]  # newest first
    past = call(fake, "GET", MR + "/versions", params={"page": "7", "per_page": "1"})
    assert past.json() == [] and past.headers["x-prev-page"] == past.headers["x-next-page"] == ""
    capped = call(fake, "GET", MR + "/diffs", params={"per_page": "1000"})
    assert capped.headers["x-per-page"] == "100"


def test_a_long_listing_is_not_counted() -> None:
    """Past 10,000 items GitLab sends no `x-total`, `x-total-pages` or `last` link."""
    path = MR.encode() + b"/notes"
    scope = {"type": "http", "method": "GET", "path": MR + "/notes", "raw_path": path}
    scope.update(query_string=b"page=2&per_page=3", headers=[(b"host", b"gl.test")])
    scope.update(scheme="http", server=("gl.test", 80))
    chunk, headers = page(Request(scope), range(10_001), default_per_page=20, max_per_page=100)
    assert list(chunk) == [3, 4, 5] and "x-total" not in headers
    assert 'rel="last"' not in headers["link"] and 'rel="next"' in headers["link"]
    assert paging_problems(path.decode(), headers, chunk) == []


def test_the_fakes_examples_are_the_vendored_ones() -> None:
    assert json.loads(PACKAGE_EXAMPLES.read_text()) == json.loads(EXAMPLES.read_text())


def test_the_docs_examples_meet_the_schemas_but_the_old_note() -> None:
    """The schemas are GitLab's examples generalised; each example meets its schema but
    notes.md's single note, which is older than its entity: no `type`, and an author
    without the `avatar_url` and `web_url` every other example's author has."""
    ref, examples = reference(), json.loads(EXAMPLES.read_text())
    array = lambda name: {"type": "array", "items": ref.named(name)}  # noqa: E731
    schema_of = {
        "merge_request": ref.named("merge_request"),
        "merge_request_diffs": array("mr_diff"),
        "merge_request_versions": array("version"),
        "merge_request_version": ref.named("version_detail"),
        "merge_request_discussions": array("discussion"),
        "merge_request_diff_discussions": array("discussion"),
        "merge_request_note": ref.named("note"),
        "current_user": ref.named("current_user"),
        "compare": ref.named("compare"),
    }
    assert set(schema_of) == set(examples)
    failing = {n: ref.errors(schema_of[n], e["example"]) for n, e in examples.items()}
    failing = {n: errors for n, errors in failing.items() if errors}
    assert failing == {
        "merge_request_note": [
            "(body): 'type' is a required property",
            "author: 'avatar_url' is a required property",
            "author: 'web_url' is a required property",
        ],
        "merge_request_diffs": [
            "0: 'collapsed' is a required property",
            "0: 'too_large' is a required property",
            "1: 'collapsed' is a required property",
            "1: 'too_large' is a required property",
        ],
    }


def test_the_client_asks_as_gitlab_documents(logged: tuple[FakeGitLabServer, Path]) -> None:
    """Every call of reviewq's client, judged as a request: token, parameters, body."""
    fake, log_dir = logged
    client = GitLabClient(fake.token, base_url=fake.url)
    try:
        assert client.viewer_username() == "reviewq-bot"
        assert client.merge_request(PROJECT, IID).sha == HEADS[-1]
        versions = client.versions(PROJECT, IID)
        assert [v.head_commit_sha for v in versions] == HEADS[::-1]
        assert len(client.list_diffs(PROJECT, IID).diffs) == 6
        assert client.raw_file(PROJECT, "app.py", HEADS[0], max_bytes=100) == b"b\n"
        client.create_discussion(PROJECT, IID, body="b is 3", position=position(3))
        client.create_note(PROJECT, IID, body="Summary")
        assert len(client.list_discussions(PROJECT, IID)) == 2
        assert client.compare(PROJECT, HEADS[0], HEADS[2]).diffs
    finally:
        client.close()
    asked = [r for r in records(log_dir) if r["request"]["headers"].get("user-agent") == "reviewq"]
    assert {r["request"]["auth"] for r in asked} == {"private-token"}
    assert {r["operation"] for r in asked} == set(reference().operations) - {
        "GET /projects/:id/merge_requests/:iid/notes",
        "GET /projects/:id/merge_requests/:iid/versions/:version_id",
    }
    assert [p for record in asked for p in check_exchange(record)] == []


def test_a_version_shows_its_diffs_whole(logged: tuple[FakeGitLabServer, Path]) -> None:
    """`/versions/:id` reads diffs without the collapse limit (GitLab's MergeRequestDiffFull
    entity, `raw_diffs(limits: false)`): a file `/diffs` collapses comes whole here,
    and one over the size limit is still `too_large`."""
    fake, _ = logged
    listed = {d["new_path"]: d for d in call(fake, "GET", MR + "/diffs").json()}
    assert listed["mid.txt"]["collapsed"] and listed["mid.txt"]["diff"] == ""
    oldest = call(fake, "GET", MR + "/versions").json()[-1]
    detail = call(fake, "GET", f"{MR}/versions/{oldest['id']}").json()
    assert detail["head_commit_sha"] == HEADS[0] and detail["commits"][0]["id"] == HEADS[0]
    whole = {d["new_path"]: d for d in detail["diffs"]}
    assert whole["mid.txt"]["diff"].startswith("@@") and not whole["mid.txt"]["collapsed"]
    assert whole["huge.txt"]["too_large"] and whole["huge.txt"]["diff"] == ""
    assert set(whole) == {"app.py", "mid.txt", "huge.txt", "gen.pb.go"}
