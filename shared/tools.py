"""The canonical tool (``dialect=midcall``) and the rules it is validated by.

Every dialect is normalized to this model; it is what the registry stores,
what the catalog distributes and what the dispatcher snapshots into each
work item.
"""

import json
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as parse_jsonpath
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.templates import reference_problem, references

# Every work item carries its tool, so a tool is validated on each hop: the
# expensive checks are cached by their input (jsonpath-ng builds a parser per
# parse, and checking a schema against the meta-schema costs milliseconds).


@lru_cache(maxsize=4096)
def compile_jsonpath(path: str) -> JSONPath:
    return parse_jsonpath(path)


@lru_cache(maxsize=1024)
def _schema_problem(schema_json: str) -> str | None:
    try:
        Draft202012Validator.check_schema(json.loads(schema_json))
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        return f"not a valid JSON Schema at {where}: {exc.message}"
    return None


TOOL_NAME_PATTERN = r"^[A-Za-z0-9_]{1,64}$"
MAX_TIMEOUT_S = 60.0


class Strict(BaseModel):
    # Unknown options are rejected when a tool is declared, not when it runs.
    model_config = ConfigDict(extra="forbid")


class ContextParameter(Strict):
    """A parameter bound from ``ToolCall.context`` instead of from the LLM."""

    name: str = Field(min_length=1, max_length=128)
    required: bool = True
    type: Literal["string", "integer", "number", "boolean"] = "string"
    description: str | None = None


RetryOn = Literal["connection_error", "timeout", "http_5xx"]


def _connection_errors_only() -> list[RetryOn]:
    return ["connection_error"]


class RetryPolicy(Strict):
    """Which failures are tried again, bounded by the call's deadline."""

    attempts: int = Field(default=1, ge=1, le=5)
    on: list[RetryOn] = Field(default_factory=_connection_errors_only)
    backoff_s: float = Field(default=0.2, ge=0, le=5)


class RequestSpec(Strict):
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] | None = None
    body: Any = None
    timeout_s: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT_S)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _known_roots(self) -> "RequestSpec":
        for field in ("url", "headers", "query", "body"):
            for reference in references(getattr(self, field)):
                problem = reference_problem(reference)
                if problem:
                    raise ValueError(f"{field}: {problem}")
        return self


class Speech(Strict):
    """What the agent says around the call.

    ``on_send``: a string is the exact filler; true lets the runtime's LLM
    phrase one; false says nothing. ``from_argument`` names an argument the LLM
    fills with its own filler, which wins over ``on_send`` when present.
    """

    on_send: str | bool = False
    from_argument: str | None = None
    on_receive: bool = True
    muted: bool = False


class ResponseSpec(Strict):
    variables: dict[str, str] = Field(default_factory=dict)

    @field_validator("variables")
    @classmethod
    def _jsonpaths(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            try:
                compile_jsonpath(path)
            except JSONPathError as exc:
                raise ValueError(f"variable '{name}': '{path}' is not a JSONPath ({exc})") from exc
        return value


class Tool(Strict):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    context_parameters: list[ContextParameter] = Field(default_factory=list)
    request: RequestSpec
    speech: Speech = Field(default_factory=Speech)
    response: ResponseSpec = Field(default_factory=ResponseSpec)

    @field_validator("parameters")
    @classmethod
    def _json_schema_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = _schema_problem(json.dumps(value, sort_keys=True))
        if problem:
            raise ValueError(problem)
        if value.get("type") != "object":
            raise ValueError('must be a JSON Schema with "type": "object" at the top level')
        return value

    @model_validator(mode="after")
    def _unique_context_names(self) -> "Tool":
        names = [p.name for p in self.context_parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"context_parameters: duplicate names {duplicates}")
        return self
