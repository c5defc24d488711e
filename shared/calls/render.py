"""Rendering a tool's HTTP request from a work item. Pure: no I/O, no clock.

The contract's rules: a whole-value template keeps its JSON type; inside a
longer string it is text; a missing argument drops the key that names it as a
whole value and renders empty inside text. GET sends the arguments as query
parameters when the tool declares no query; other methods send them as the
JSON body when the tool declares no body.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from yarl import URL

from shared.calls.redaction import Redaction
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import ExecuteRequest
from shared.contract.templates import (
    MISSING,
    TEMPLATE,
    as_text,
    references,
    render_string,
    render_value,
)
from shared.security.secret_scope import require_all

USER_AGENT = "midcall/0.1"


@dataclass(frozen=True)
class RenderedRequest:
    method: str
    url: str
    headers: dict[str, str]
    params: list[tuple[str, str | int | float | bool | None]] = field(default_factory=list)
    body: bytes | None = None
    # The tool's signing secrets, resolved; the executor signs each attempt.
    signing_secrets: tuple[str, ...] = field(default=(), repr=False)
    # Every secret value the request was rendered with, to keep out of spans and metrics.
    hidden: Redaction = field(default=Redaction(), repr=False)
    # The URL's host as the tool writes it, where a secret is rendered into it:
    # what a refusal names instead of the host.
    secret_host: str | None = None


def scope_for(work: ExecuteRequest, secrets: dict[str, str]) -> dict[str, Any]:
    return {
        "input": work.bound,
        "context": work.call.context,
        "secrets": secrets,
        "call": {"id": work.call.call_id},
        "conversation": {"id": work.call.conversation_id},
    }


# RFC 9110: a field name is a token; a value may hold tabs but no other control character.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
FORBIDDEN_IN_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A port at the end of a URL's host:port (not the last group of a bracketed IPv6 address).
PORT = re.compile(r":[^:\]]*\Z")


def render_request(work: ExecuteRequest, secrets: dict[str, str]) -> RenderedRequest:
    spec = work.tool.http()
    require_all(work, secrets)
    scope = scope_for(work, secrets)
    body = _body(work, scope)
    return RenderedRequest(
        method=spec.method,
        url=_parsable(render_url(spec.url, scope), spec.url),
        headers=_headers(work, scope, has_body=body is not None),
        params=_query(work, scope),
        body=body,
        signing_secrets=_signing_secrets(work, scope),
        hidden=_hidden(work, secrets),
        secret_host=_secret_host(spec.url),
    )


def render_cancel(work: ExecuteRequest, secrets: dict[str, str]) -> RenderedRequest:
    """The tool's ``on_cancel``: its URL and method, the request's headers (its
    Idempotency-Key, the call id, among them), no body."""
    cancel = work.tool.http().on_cancel
    if cancel is None:
        raise TypeError(f"{work.tool.name} declares no on_cancel")
    require_all(work, secrets)
    scope = scope_for(work, secrets)
    return RenderedRequest(
        method=cancel.method,
        url=_parsable(render_url(cancel.url, scope), cancel.url),
        headers=_headers(work, scope, has_body=False),
        signing_secrets=_signing_secrets(work, scope),
        hidden=_hidden(work, secrets),
        secret_host=_secret_host(cancel.url),
    )


def _hidden(work: ExecuteRequest, secrets: dict[str, str]) -> Redaction:
    """Every secret value the tool's requests are rendered with."""
    return Redaction(tuple(secrets[name] for name in sorted(secret_names(work))))


def _signing_secrets(work: ExecuteRequest, scope: dict[str, Any]) -> tuple[str, ...]:
    signing = work.tool.http().signing
    if signing is None:
        return ()
    return tuple(as_text(render_string(secret, scope)) for secret in signing.secrets)


def _parsable(url: str, template: str) -> str:
    """``url``, if an HTTP client can send to it: a port rendered from an argument or a
    secret may be no number at all. The template is named, never the rendered text."""
    try:
        URL(url).port  # noqa: B018  (parsing it is the check)
    except ValueError as exc:
        raise CallRejected(
            ErrorCode.INVALID_ARGUMENTS,
            f"The URL template '{template}' does not render to a URL that can be called.",
        ) from exc
    return url


def secret_names(work: ExecuteRequest) -> set[str]:
    """The ``{{secrets.NAME}}`` the tool's request refers to."""
    return work.tool.http().secret_names()


def _secret_host(url_template: str) -> str | None:
    """The host of ``url_template`` as written, if a secret is rendered into it (else None)."""
    host = PORT.sub("", urlsplit(url_template).netloc.rpartition("@")[2])
    return host if any(ref.startswith("secrets.") for ref in references(host)) else None


def render_url(template: str, scope: dict[str, Any]) -> str:
    """Values inserted into a URL are percent-encoded, so an argument cannot change its shape."""
    if TEMPLATE.fullmatch(template):
        return as_text(render_string(template, scope))
    return str(render_string(template, scope, escape=lambda text: quote(text, safe="")))


def _headers(work: ExecuteRequest, scope: dict[str, Any], has_body: bool) -> dict[str, str]:
    headers = {
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": work.call.call_id,
    }
    if has_body:
        headers["Content-Type"] = "application/json"
    rendered: dict[str, str] = {}
    for template, value_template in work.tool.http().headers.items():
        value = render_string(value_template, scope)
        if value is not MISSING:
            name = as_text(render_string(template, scope))
            rendered[name] = _checked_header(template, name, as_text(value))
    lowered = {name.lower() for name in rendered}
    return {k: v for k, v in headers.items() if k.lower() not in lowered} | rendered


def _checked_header(template: str, name: str, value: str) -> str:
    # A fault names the header by its template: the rendered name may hold a secret.
    if not HEADER_NAME.fullmatch(name):
        raise CallRejected(
            ErrorCode.INVALID_ARGUMENTS,
            f"The header name template {template!r} does not render to a name HTTP allows.",
        )
    if FORBIDDEN_IN_HEADER_VALUE.search(value):
        raise CallRejected(
            ErrorCode.INVALID_ARGUMENTS,
            f"The value for the '{template}' header cannot contain line breaks "
            "or other control characters.",
        )
    return value


def _query(work: ExecuteRequest, scope: dict[str, Any]) -> list[tuple[str, Any]]:
    spec = work.tool.http()
    if spec.query is not None:
        return _pairs(render_value(spec.query, scope))
    return _pairs(work.bound) if spec.method == "GET" else []


def _pairs(values: dict[str, Any]) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for name, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                pairs.append((name, as_text(item)))
    return pairs


def _body(work: ExecuteRequest, scope: dict[str, Any]) -> bytes | None:
    spec = work.tool.http()
    if spec.body is not None:
        value = render_value(spec.body, scope)
    elif spec.method != "GET":
        value = work.bound
    else:
        return None
    return None if value is MISSING else _encode_json(value, spec.json_style)


def _encode_json(value: Any, style: str) -> bytes:
    if style == "python":
        return json.dumps(value).encode()  # Python's defaults, byte for byte
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def full_url(request: RenderedRequest) -> URL:
    """The URL with the rendered query appended to any it already has."""
    url = URL(request.url)
    if not request.params:
        return url
    return url.extend_query([(k, _query_value(v)) for k, v in request.params])


def _query_value(value: str | int | float | bool | None) -> str:
    # As a query string carries them: JSON's spelling for booleans and null.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
