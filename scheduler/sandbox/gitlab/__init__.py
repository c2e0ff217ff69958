"""A fake GitLab REST API, served over real HTTP beside the fake GitHub.

It holds merge requests with their diff versions and file contents, lists diffs (with
GitLab's collapsed and too-large files), versions, discussions and notes with GitLab's
paging, checks a discussion's position as GitLab does, and injects the failures a
review bot must survive: 429s with `Retry-After` or only `RateLimit-Reset`, 502s
before anything happened and after a note was stored, slow answers. Tests, `reviewq
demo --forge gitlab` and the chaos suite drive it through `/_gl/*`.
"""

from scheduler.sandbox.gitlab.app import LINE_CODE_MESSAGE, create_gitlab_app
from scheduler.sandbox.gitlab.remote import FakeGitLabServer, GitLabControl, serve_fake_gitlab
from scheduler.sandbox.gitlab.state import (
    DEV_GITLAB_TOKEN,
    FakeGitLab,
    FakeGitLabConfig,
    FaultsUpdate,
    MrFile,
    MrSpec,
    NoteSpec,
    line_map,
)

__all__ = [
    "DEV_GITLAB_TOKEN",
    "LINE_CODE_MESSAGE",
    "FakeGitLab",
    "FakeGitLabConfig",
    "FakeGitLabServer",
    "FaultsUpdate",
    "GitLabControl",
    "MrFile",
    "MrSpec",
    "NoteSpec",
    "create_gitlab_app",
    "line_map",
    "serve_fake_gitlab",
]
