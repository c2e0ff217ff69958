"""GitLab's documented REST API as a referee: does an exchange match what GitLab documents?

GitLab publishes an OpenAPI description (`doc/api/openapi/openapi_v2.yaml`), but it
leaves out the discussions, notes and diff-versions endpoints reviewq calls, and
Swagger 2.0 can say neither which fields are always there nor which may be null. So
the reference is GitLab's API documentation: `tests/fixtures/gitlab_api/` holds the
example responses of its pages, verbatim (`doc_examples.json`), and JSON Schemas
written by hand from those pages (`schemas.json`), each saying where from (`SOURCE.md`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["EXAMPLES", "SCHEMAS", "Reference", "reference"]

FIXTURES = Path(__file__).parent / "fixtures" / "gitlab_api"
SCHEMAS = FIXTURES / "schemas.json"
EXAMPLES = FIXTURES / "doc_examples.json"
# GitLab's status codes (doc/api/rest/troubleshooting.md), and the load balancer's 502.
DOCUMENTED_STATUSES = {200, 201, 202, 204, 301, 304, 400, 401, 403, 404, 405, 409, 412, 422, 429}
DOCUMENTED_STATUSES |= {500, 502, 503}
_INT = re.compile(r"^(0|[1-9][0-9]*)$")


@dataclass
class Reference:
    """The schemas, one validator per schema asked for."""

    document: dict[str, Any]
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict)

    @property
    def operations(self) -> dict[str, dict[str, Any]]:
        ops: dict[str, dict[str, Any]] = self.document["operations"]
        return ops

    def errors(self, schema: dict[str, Any], instance: object) -> list[str]:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            root = {**schema, "$defs": self.document["$defs"]}
            validator = Draft202012Validator(root)
            self._validators[key] = validator
        found = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message[:300]}" for e in found
        ]

    def named(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/$defs/{name}"}

    def response_errors(self, operation: str, status: int, answer: dict[str, Any]) -> list[str]:
        """The fake's answer against what GitLab documents for that operation and status."""
        if status not in DOCUMENTED_STATUSES:
            return [f"status {status} is not one GitLab documents"]
        op = self.operations.get(operation)
        if op is None and status < 400:
            return [f"{operation} is not an operation the reference covers"]
        content_type = answer["content_type"]
        schema = None if op is None else op["responses"].get(str(status))
        if schema == "text":
            return [] if content_type.startswith("text/plain") else [f"not text: {content_type!r}"]
        if status >= 500 or status == 429:
            return (
                []
                if content_type.startswith(("text/plain", "application/json"))
                else [f"a {status} answered as {content_type!r}"]
            )
        if not content_type.startswith("application/json") or "json" not in answer:
            return [f"a {status} answered as {content_type!r}, not JSON"]
        if schema is None:
            schema = self.named("error") if status >= 400 else None
        if schema is None:
            return [f"status {status} is not one the operation documents"]
        return self.errors(schema, answer["json"])

    def request_errors(self, operation: str, query: dict[str, str], body: object) -> list[str]:
        """The client's query and JSON body against the operation's parameters."""
        op = self.operations.get(operation)
        if op is None:
            return [f"{operation} is not an operation the reference covers"]
        problems = [f"?{e}" for e in self.errors(op["query"], query)]
        schema = op.get("body")
        if schema is None:
            return problems + ([] if body is None else [f"{operation} takes no body"])
        if body is None:
            return [*problems, "the body is required"]
        return problems + self.errors(schema, body)


def is_count(text: str | None) -> bool:
    return text is not None and bool(_INT.match(text))


@cache
def reference() -> Reference:
    return Reference(json.loads(SCHEMAS.read_text(encoding="utf-8")))
