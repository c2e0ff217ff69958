"""GitHub's OpenAPI description as a referee: does an exchange match what GitHub documents?

The vendored subset (`tests/fixtures/github_openapi/`) is OpenAPI 3.0, whose schemas
are JSON Schema with a few changes; `to_json_schema` undoes the one that matters here
(`nullable`), so `jsonschema` can judge both sides of an exchange: the fake's response
against the operation's response schema, and the client's request against the request
body and query parameters. A status the operation does not list (GitHub lists few of
its rate-limit and 5xx answers) is judged as GitHub's generic error body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["API_VERSION", "Description", "description", "to_json_schema"]

SUBSET = (
    Path(__file__).parent / "fixtures" / "github_openapi" / "api.github.com.2022-11-28.subset.json"
)
API_VERSION = "2022-11-28"
# OpenAPI keywords that are not JSON Schema, or that only annotate.
_ANNOTATIONS = {
    "nullable",
    "example",
    "discriminator",
    "xml",
    "externalDocs",
    "readOnly",
    "writeOnly",
}
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_ERROR_BODY = {
    "anyOf": [
        {"$ref": "#/components/schemas/basic-error"},
        {"$ref": "#/components/schemas/validation-error-simple"},
    ]
}


def to_json_schema(node: Any) -> Any:
    """One OpenAPI 3.0 schema as JSON Schema: `nullable` becomes a null type or branch."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:  # OpenAPI 3.0 ignores a reference's siblings
        return {"$ref": node["$ref"]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(s) for name, s in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value)
        elif key in _SCHEMA_LISTS:
            out[key] = [to_json_schema(s) for s in value]
        else:
            out[key] = value
    if not node.get("nullable"):
        return out
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [out, {"type": "null"}]}


@dataclass
class Description:
    """The subset, its schemas converted once, and one validator per schema asked for."""

    document: dict[str, Any]
    components: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        schemas = self.document["components"]["schemas"]
        self.components = {"schemas": {k: to_json_schema(v) for k, v in schemas.items()}}
        self._validators: dict[str, Draft202012Validator] = {}

    def operation(self, method: str, path: str) -> dict[str, Any]:
        op: dict[str, Any] = self.document["paths"][path][method.lower()]
        return op

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        _, _, kind, name = ref.split("/", 3)
        resolved: dict[str, Any] = self.document["components"][kind][name]
        return resolved

    def _errors(self, schema: dict[str, Any], instance: object) -> list[str]:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            root = {**to_json_schema(schema), "components": self.components}
            validator = Draft202012Validator(
                root, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            self._validators[key] = validator
        found = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message[:300]}" for e in found
        ]

    def response_schema(self, method: str, path: str, status: int) -> dict[str, Any] | None:
        """The schema GitHub documents for that answer; None for one without a body."""
        responses = self.operation(method, path)["responses"]
        listed = responses.get(str(status))
        if listed is None:
            return _ERROR_BODY if status >= 400 else None
        content = self._resolve(listed).get("content", {}).get("application/json")
        return None if content is None else dict(content["schema"])

    def response_errors(self, method: str, path: str, status: int, body: object) -> list[str]:
        listed = str(status) in self.operation(method, path)["responses"] or status >= 400
        if not listed:
            return [f"{method} {path}: status {status} is not one GitHub documents"]
        schema = self.response_schema(method, path, status)
        return [] if schema is None else self._errors(schema, body)

    def request_errors(
        self, method: str, path: str, body: object, query: dict[str, str]
    ) -> list[str]:
        """The JSON body against the request body's schema, the query against the
        parameters (GitHub reads them as integers where the schema says so)."""
        op = self.operation(method, path)
        problems: list[str] = []
        params = {p["name"]: p for p in map(self._resolve, op.get("parameters", []))}
        for name, raw in query.items():
            param = params.get(name)
            if param is None or param["in"] != "query":
                problems.append(f"query parameter {name!r} is not one GitHub documents")
                continue
            value: object = (
                int(raw)
                if param["schema"].get("type") == "integer" and raw.lstrip("-").isdigit()
                else raw
            )
            problems += [f"?{name}: {e}" for e in self._errors(param["schema"], value)]
        request_body = op.get("requestBody")
        if request_body is None:
            if body is not None:
                problems.append(f"{method} {path} takes no body")
            return problems
        schema = request_body["content"]["application/json"]["schema"]
        if body is None:
            return problems + ([] if not request_body.get("required") else ["the body is required"])
        return problems + self._errors(schema, body)


@cache
def description() -> Description:
    return Description(json.loads(SUBSET.read_text(encoding="utf-8")))
