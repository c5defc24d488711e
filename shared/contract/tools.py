"""The canonical tool (``dialect=midcall``) and the rules it is validated by.

Every dialect is normalized to this model; it is what the registry stores,
what the catalog distributes and what the dispatcher snapshots into each
work item.
"""

import ipaddress
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as parse_jsonpath
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.contract.errors import ErrorCode
from shared.contract.json_depth import nests_deeper, too_deep
from shared.contract.templates import reference_problem, references

KNOWN_CODES = {code.value for code in ErrorCode}

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


# Validation context of a tool read back from a work item: it was checked when it
# was declared, so the declaration-time checks (schema against the meta-schema,
# template roots) are not paid again on every hop.
DECLARED_BEFORE = {"tool_declared_before": True}


def declaring(info: ValidationInfo) -> bool:
    """Whether a tool is being declared, not read from a message (declared before)."""
    return not (isinstance(info.context, dict) and info.context.get("tool_declared_before"))


TOOL_NAME_PATTERN = r"^[A-Za-z0-9_]{1,64}$"
MAX_TIMEOUT_S = 60.0
# How long a call whose API answered 202 may wait for its completion, at most: the
# deadline timers' reach (shared.fabric.deadline_timers.MAX_AHEAD_S) bounds it.
MAX_CALLBACK_TIMEOUT_S = 240.0
MAX_HOSTS = 32
# A URL's host as urlsplit and yarl give it: a DNS name (or IPv4 address), lowercase.
DNS_NAME = re.compile(r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)*\.?")
# Set by the registry, never by a tool document, and left out of what REST answers.
INTERNAL_FIELDS = frozenset({"platform", "owner_account"})


class Strict(BaseModel):
    # Unknown options are rejected when a tool is declared, not when it runs.
    model_config = ConfigDict(extra="forbid")


class ContextParameter(Strict):
    """A parameter bound from ``ToolCall.context`` instead of from the LLM."""

    name: str = Field(min_length=1, max_length=128)
    required: bool = True
    type: Literal["string", "integer", "number", "boolean"] = "string"
    # The allowed values, when the platform declares an enumeration.
    enum: list[str] | None = Field(default=None, min_length=1)
    description: str | None = None


# http_5xx: 502, 503 or 504 (a gateway or an overloaded API); http_429: told to slow down.
RetryOn = Literal["connection_error", "timeout", "http_5xx", "http_429"]


def _connection_errors_only() -> list[RetryOn]:
    return ["connection_error"]


class RetryPolicy(Strict):
    """Which failures are tried again, bounded by the call's deadline."""

    attempts: int = Field(default=1, ge=1, le=5)
    on: list[RetryOn] = Field(default_factory=_connection_errors_only)
    backoff_s: float = Field(default=0.2, ge=0, le=5)
    # Repeat a POST or PATCH that may have reached the API (only safe if it honours
    # the Idempotency-Key header every request carries).
    non_idempotent: bool = False


class Signing(Strict):
    """How the request is signed, so the API can tell it came from us.

    ``vocode``: ``x-vocode-signature: base64(HMAC-SHA256(base64decode(secret), body))``,
    Vocode's scheme (no timestamp, so a captured request can be replayed).
    ``standard_webhooks``: the Standard Webhooks headers (``webhook-id`` = call id,
    ``webhook-timestamp``, ``webhook-signature: v1,<base64>`` over
    ``id.timestamp.body``); several ``whsec_`` secrets sign at once, for rotation.
    Secrets are literal values or ``{{secrets.NAME}}`` templates.
    """

    scheme: Literal["vocode", "standard_webhooks"]
    secrets: list[str] = Field(min_length=1, max_length=4)

    @model_validator(mode="after")
    def _one_vocode_secret(self) -> "Signing":
        if self.scheme == "vocode" and len(self.secrets) != 1:
            raise ValueError("vocode signing takes exactly one secret")
        return self


Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class OnCancel(Strict):
    """Where the tool's API hears that a call was cancelled while it may be working on it
    (added with the SDK): templated like the request, sent with the request's headers and
    its Idempotency-Key (the call id), without a body."""

    url: str
    method: Method = "POST"

    _method = field_validator("method", mode="before")(_upper)
    _url = field_validator("url")(_http_url)


class RequestSpec(Strict):
    url: str
    method: Method = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] | None = None
    body: Any = None
    # "python": json.dumps' default separators (", ", ": ") and ASCII escapes, the
    # bytes Vocode's receivers re-serialize and verify signatures against.
    json_style: Literal["compact", "python"] = "compact"
    timeout_s: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT_S)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    signing: Signing | None = None
    # The only hosts this tool may call. Required where the LLM picks the host
    # ({{input.*}} in the URL's host) and the request carries secrets or a signature.
    allowed_hosts: list[str] | None = Field(default=None, min_length=1, max_length=MAX_HOSTS)
    on_cancel: OnCancel | None = None
    # Set: a 202 Accepted is not the answer; the API reports through its callback token,
    # and the call waits this long from its acceptance (capped by the deployment's
    # MIDCALL_MAX_CALLBACK_TIMEOUT_S) for the completion.
    callback_timeout_s: float | None = Field(default=None, gt=0, le=MAX_CALLBACK_TIMEOUT_S)

    _method = field_validator("method", mode="before")(_upper)
    _url = field_validator("url")(_http_url)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        hosts = [host.strip().lower().removeprefix("[").removesuffix("]") for host in value]
        wrong = [host for host in hosts if not _is_host(host)]
        if wrong:
            raise ValueError(
                f"{wrong} are not host names: write each as the URL's host alone "
                "(ASCII, punycode for other scripts), without scheme, port or path"
            )
        return hosts

    def templated(self) -> dict[str, Any]:
        """Every field that may hold templates: the one list validation and rendering share."""
        return {
            "url": self.url,
            "headers": self.headers,
            "query": self.query,
            "body": self.body,
            "signing": self.signing.secrets if self.signing else [],
            "on_cancel": self.on_cancel.url if self.on_cancel else None,
        }

    def secret_names(self) -> set[str]:
        """The NAMEs of every ``{{secrets.NAME}}`` the request refers to."""
        return {
            reference.partition(".")[2]
            for reference in references(list(self.templated().values()))
            if reference.startswith("secrets.")
        }

    def sends_secrets(self) -> bool:
        """Whether the request carries a secret's value, or a signature made with one."""
        return self.signing is not None or bool(self.secret_names())

    def host_from_input(self) -> bool:
        """Whether the LLM's arguments choose (part of) the host the request goes to."""
        return _host_from_input(self.url)

    def allows_host(self, host: str | None) -> bool:
        return self.allowed_hosts is None or (host or "").lower() in self.allowed_hosts

    @model_validator(mode="after")
    def _known_roots(self, info: ValidationInfo) -> "RequestSpec":
        if not declaring(info):
            return self
        for field, value in self.templated().items():
            for reference in references(value):
                problem = reference_problem(reference)
                if problem:
                    raise ValueError(f"{field}: {problem}")
        return self

    @model_validator(mode="after")
    def _secrets_go_to_known_hosts(self, info: ValidationInfo) -> "RequestSpec":
        if not declaring(info):
            return self
        # An argument in the host lets a prompt send the tool's secrets (or a request
        # signed as ours) anywhere: only to hosts the tool names, then. The cancel goes
        # with the same headers, so the same holds for its URL.
        urls = {"url": self.url} | ({"on_cancel.url": self.on_cancel.url} if self.on_cancel else {})
        for field, url in urls.items():
            if _host_from_input(url) and self.sends_secrets() and self.allowed_hosts is None:
                raise ValueError(
                    f"{field}: the host comes from the call's arguments ({{{{input.*}}}}), so "
                    "the LLM picks where the request goes; a tool that sends secrets or signs "
                    "its requests must list the hosts it may call in request.allowed_hosts"
                )
            fixed = None if _templates_in_host(url) else urlsplit(url).hostname
            if fixed is not None and not self.allows_host(fixed):
                raise ValueError(f"allowed_hosts: the {field}'s host '{fixed}' is not among them")
        return self


def _is_host(text: str) -> bool:
    if DNS_NAME.fullmatch(text):
        return True
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _host_from_input(url: str) -> bool:
    return any(
        reference.partition(".")[0] == "input" for reference in references(urlsplit(url).netloc)
    )


def _templates_in_host(url: str) -> bool:
    return any(True for _ in references(urlsplit(url).netloc))


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


class ToolErrorRule(Strict):
    """A 2xx body that says the action failed: ``tool_error`` with the API's message."""

    path: str
    equals: Any
    message_path: str | None = None


class ResponseSpec(Strict):
    """How a 2xx body becomes the result.

    ``result_path``: the JSONPath of the result within the body (the whole body
    when unset); with ``result_required`` a body without it, or with a non-object
    where ``result_type`` is "object", is an ``invalid_response``.
    ``agent_message_path``: words the API wants spoken verbatim.
    ``variables``: name -> JSONPath, kept per conversation.
    """

    variables: dict[str, str] = Field(default_factory=dict)
    result_path: str | None = None
    result_required: bool = False
    result_type: Literal["any", "object"] = "any"
    agent_message_path: str = "$.agent_message"
    tool_error: ToolErrorRule | None = None

    @model_validator(mode="after")
    def _jsonpaths(self) -> "ResponseSpec":
        paths = {f"variables.{name}": path for name, path in self.variables.items()}
        paths["agent_message_path"] = self.agent_message_path
        if self.result_path is not None:
            paths["result_path"] = self.result_path
        if self.tool_error is not None:
            paths["tool_error.path"] = self.tool_error.path
            if self.tool_error.message_path:
                paths["tool_error.message_path"] = self.tool_error.message_path
        for where, path in paths.items():
            try:
                compile_jsonpath(path)
            except JSONPathError as exc:
                raise ValueError(f"{where}: '{path}' is not a JSONPath ({exc})") from exc
        return self


class ErrorPolicy(Strict):
    """Per-tool wording and consequences of errors, as the tool's platform documents them."""

    # Error code -> the message to use instead of Midcall's default wording.
    messages: dict[str, str] = Field(default_factory=dict)
    # Error codes after which the platform ends the session (end_conversation: true).
    end_conversation_on: list[str] = Field(default_factory=list)

    def message_for(self, code: str, default: str) -> str:
        return self.messages.get(code, default)

    def ends_conversation(self, code: str) -> bool:
        return code in self.end_conversation_on

    @model_validator(mode="after")
    def _known_codes(self) -> "ErrorPolicy":
        unknown = sorted((set(self.messages) | set(self.end_conversation_on)) - KNOWN_CODES)
        if unknown:
            raise ValueError(f"unknown error codes {unknown}; known: {sorted(KNOWN_CODES)}")
        return self


# A function's source as stored and sent in every work item: CallKaro's functions are a
# page or two; this keeps a work item far below NATS's message size.
MAX_CODE_CHARS = 65_536
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# Modules a python tool may import without MIDCALL_SANDBOX_MODULES adding more.
PYTHON_MODULES: Final = ("datetime", "httpx", "json", "logging", "math", "re", "typing")


class PythonSpec(Strict):
    """A tool written as an ``async def`` in the customer's own Python (CallKaro's
    advanced mode), run by the code-executor in a sandbox.

    ``function`` names the function in ``code``; ``secrets`` are the account
    secrets the code reads (``ctx.secrets["NAME"]``), the only ones it is given.
    The registry derives both, and the tool's parameters, from the code itself.
    """

    code: str = Field(min_length=1, max_length=MAX_CODE_CHARS)
    function: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    secrets: list[str] = Field(default_factory=list, max_length=64)
    timeout_s: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT_S)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        wrong = [name for name in value if not re.fullmatch(SECRET_NAME_PATTERN, name)]
        if wrong:
            raise ValueError(f"{wrong} are not secret names ({SECRET_NAME_PATTERN})")
        return sorted(set(value))


class Tool(Strict):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    context_parameters: list[ContextParameter] = Field(default_factory=list)
    # "http": the tool is a request to the customer's API (``request``); "python": a
    # function of the customer's, run in the sandbox (``python``).
    kind: Literal["http", "python"] = "http"
    request: RequestSpec | None = None
    python: PythonSpec | None = None
    speech: Speech = Field(default_factory=Speech)
    response: ResponseSpec = Field(default_factory=ResponseSpec)
    errors: ErrorPolicy = Field(default_factory=ErrorPolicy)
    # Internal (INTERNAL_FIELDS), stamped by the registry and carried in every work item
    # so the executor can tell which secrets the tool may use:
    # registered with the admin key, so it may use platform secrets (MIDCALL_SECRET_*);
    platform: bool = False
    # the account that owns it (its agent's), whose secrets it may use.
    owner_account: str | None = None

    def public_dump(self) -> dict[str, Any]:
        """The tool as REST shows it and a document declares it: no internal fields."""
        dumped = self.model_dump(mode="json", exclude=set(INTERNAL_FIELDS))
        # An HTTP tool reads as it did before python tools: no kind, no python.
        for field in ("request", "python"):
            if dumped[field] is None:
                del dumped[field]
        # Nor the extensions added with the SDK, where a tool does not declare them.
        for extension in ("on_cancel", "callback_timeout_s"):
            if dumped.get("request", {}).get(extension, False) is None:
                del dumped["request"][extension]
        if self.kind == "http":
            del dumped["kind"]
        return dumped

    def http(self) -> RequestSpec:
        """The request of an HTTP tool (validation makes sure one has it)."""
        if self.request is None:
            raise TypeError(f"{self.name} is a {self.kind} tool, not an HTTP one")
        return self.request

    @property
    def timeout_s(self) -> float:
        """How long a call may take when it names no deadline of its own."""
        return self.python.timeout_s if self.python is not None else self.http().timeout_s

    def secret_names(self) -> set[str]:
        """The account (or platform) secrets a call of this tool may be given."""
        if self.python is not None:
            return set(self.python.secrets)
        return self.http().secret_names()

    @model_validator(mode="after")
    def _one_kind(self) -> "Tool":
        if self.kind == "http" and (self.request is None or self.python is not None):
            raise ValueError('an HTTP tool (kind "http", the default) has a request, no python')
        if self.kind == "python" and (self.python is None or self.request is not None):
            raise ValueError('a python tool (kind "python") has python, no request')
        return self

    @field_validator("parameters")
    @classmethod
    def _json_schema_object(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if not declaring(info):
            return value
        # Before anything recurses into it: json.dumps and jsonschema go a level per level.
        if nests_deeper(value):
            raise ValueError(too_deep("the schema"))
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


class ReadTools:
    """The tools read from work items and outcomes, one object per definition.

    Every work item and outcome carries its tool whole, and most carry one of a
    few definitions: each is parsed once and the object shared (a work item
    parses in half the time and holds 5.3 instead of 12.0 KiB). A definition
    is found by its owner and name, and used only if it is exactly the one
    read, so a tool changed since, or one of the same name in another message,
    is parsed as itself. Shared objects are never changed after reading (code
    that needs another tool makes a copy).
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._read: OrderedDict[tuple[Any, Any], tuple[dict[str, Any], Tool]] = OrderedDict()

    def read(self, value: Any, parse: Callable[[Any], Tool]) -> Tool:
        if not isinstance(value, dict):
            return parse(value)
        key = (value.get("owner_account"), value.get("name"))
        known = self._read.get(key)
        if known is not None and known[0] == value:
            self._read.move_to_end(key)
            return known[1]
        tool = parse(value)
        self._read[key] = (value, tool)
        self._read.move_to_end(key)
        if len(self._read) > self._size:
            self._read.popitem(last=False)
        return tool
