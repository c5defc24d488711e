"""``vocode``: Vocode's external actions (``ExecuteExternalActionVocodeActionConfig``).

Vocode POSTs ``{"payload": <arguments>}`` as Python's ``json.dumps`` writes it
(the bytes its receivers re-serialize to check ``x-vocode-signature``), waits
10 seconds, and reads ``{"result": ..., "agent_message": ...}`` back.

``signature_secret`` is the value itself or ``{{secrets.NAME}}``; the
registry keeps a value as an account secret, and an export shows ``***``.
"""

import json
from base64 import b64decode
from typing import Any

from services.registry.dialects import rules
from services.registry.dialects.canonical import validate
from shared.contract import json_depth
from shared.contract.json_depth import TooDeep
from shared.contract.tools import Tool
from shared.security.account_secrets import referenced_name

FIELDS = (
    "name",
    "description",
    "url",
    "input_schema",
    "speak_on_send",
    "speak_on_receive",
    "signature_secret",
    "processing_mode",
)
REQUIRED = ("name", "description", "url", "input_schema")
FLAGS = ("speak_on_send", "speak_on_receive")
# Vocode's only processing mode: the agent stays silent until the result.
MUTED = "muted"
REDACTED = "***"
BODY = {"payload": "{{input}}"}
TIMEOUT_S = 10
RETRY = {"attempts": 3, "on": ["connection_error"], "backoff_s": 0.2}
RESPONSE = {
    "result_path": "$.result",
    "result_required": True,
    "result_type": "object",
    "agent_message_path": "$.agent_message",
}


def parse(document: Any) -> list[Tool]:
    actions = rules.entries(document, "action", "actions")
    rules.reject([problem for label, action in actions for problem in _problems(label, action)])
    return validate([_tool(action) for _, action in actions])


def split(document: Any) -> list[Any]:
    """Each action as posted, in ``parse``'s order."""
    return rules.definitions(document, "action")


def export(tool: Tool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": tool.name,
        "description": tool.description,
        "url": tool.http().url,
        "input_schema": json.dumps(tool.parameters),
        "speak_on_send": bool(tool.speech.on_send),
        "speak_on_receive": tool.speech.on_receive,
    }
    signing = tool.http().signing
    if signing is not None and signing.scheme == "vocode":
        document["signature_secret"] = signing.secrets[0]
    if tool.speech.muted:
        document["processing_mode"] = MUTED
    return document


def redact(document: dict[str, Any]) -> dict[str, Any]:
    """The secret is the account's, kept sealed: an export names that there is one."""
    if "signature_secret" in document:
        return {**document, "signature_secret": REDACTED}
    return document


def _problems(label: str, action: dict[str, Any]) -> list[str]:
    problems = [*rules.missing(label, action, REQUIRED), *rules.unknown(label, action, FIELDS)]
    problems += [
        f"{label}: {flag} must be true or false"
        for flag in FLAGS
        if not isinstance(action.get(flag, False), bool)
    ]
    checks = {
        "input_schema": _schema_problem,
        "signature_secret": _secret_problem,
        "processing_mode": _mode_problem,
    }
    found = (check(action[field]) for field, check in checks.items() if field in action)
    return problems + [f"{label}: {problem}" for problem in found if problem]


def _schema_problem(value: Any) -> str | None:
    try:
        schema = _input_schema(value)
    except TooDeep as exc:
        return str(exc)
    except ValueError as exc:
        return f"input_schema is not valid JSON: {exc}"
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return 'input_schema must be a JSON Schema whose top level is an object ("type": "object")'
    return None


def _secret_problem(value: Any) -> str | None:
    # A reference to an account secret set over REST, or the value itself (which the
    # registry then keeps as an account secret: see services.registry.tool_secrets).
    if isinstance(value, str) and referenced_name(value):
        return None
    try:
        key = b64decode(value, validate=True) if isinstance(value, str) else b""
    except ValueError:  # binascii.Error, or text that is not ASCII
        key = b""
    if key:
        return None
    return (
        "signature_secret must be base64, such as base64 of 32 random bytes, "
        "or a reference to an account secret: {{secrets.NAME}}"
    )


def _mode_problem(value: Any) -> str | None:
    return (
        None if value == MUTED else f'processing_mode must be "{MUTED}", the only mode Vocode has'
    )


def _input_schema(value: Any) -> Any:
    """Vocode's config holds the schema as a JSON string; an object is taken as well.

    A string is a document of its own, so it is held to the same depth as the one around it.
    """
    return json_depth.loads(value, "input_schema") if isinstance(value, str) else value


def _tool(action: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": action["name"],
        "description": action["description"],
        "parameters": _input_schema(action["input_schema"]),
        "request": _request(action),
        "speech": {
            "on_send": action.get("speak_on_send", False),
            "on_receive": action.get("speak_on_receive", True),
            "muted": action.get("processing_mode") == MUTED,
        },
        "response": RESPONSE,
    }


def _request(action: dict[str, Any]) -> dict[str, Any]:
    request = {
        "url": action["url"],
        "method": "POST",
        "body": BODY,
        "json_style": "python",
        "timeout_s": TIMEOUT_S,
        "retry": RETRY,
    }
    if "signature_secret" in action:
        request["signing"] = {"scheme": "vocode", "secrets": [action["signature_secret"]]}
    return request
