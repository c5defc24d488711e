"""``midcall tools import``: a platform's tool document from a file, through the registry.

It goes through the REST API, not the database, so the registry validates it
and the catalog distributes it exactly as for any other client. A ``.py``
file is one python tool, its function: sent as the document its dialect
wraps code in.
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from shared.security.api_keys import bearer

CONTENT_TYPES = {"xml": "application/xml"}
# The document a dialect that can hold a python tool holds its code in.
PYTHON_DOCUMENTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "callkaro": lambda code: {"mode": "advanced", "code": code},
    "midcall": lambda code: {"kind": "python", "python": {"code": code}},
}


def import_tools(registry: str, key: str, file: Path, agent: str, dialect: str) -> int:
    try:
        document = import_document(file, dialect)
    except OSError as exc:
        print(f"cannot read {file}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"cannot import {file}: {exc}", file=sys.stderr)
        return 2
    try:
        response = httpx.post(
            f"{registry.rstrip('/')}/v1/agents/{agent}/tools",
            params={"dialect": dialect},
            content=document,
            headers={
                "Content-Type": CONTENT_TYPES.get(dialect, "application/json"),
                **bearer(key),
            },
            timeout=30,
        )
    except httpx.TransportError as exc:
        print(f"cannot reach the registry at {registry}: {exc}", file=sys.stderr)
        return 2
    if response.status_code != 201:
        print(f"rejected ({response.status_code}): {message(response)}", file=sys.stderr)
        return 1
    for tool in response.json()["tools"]:
        print(json.dumps(tool, indent=2))
    return 0


def message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text


def import_document(file: Path, dialect: str) -> bytes:
    """The request body: the file as it is, or a ``.py`` file's code in its dialect's document."""
    if file.suffix != ".py":
        return file.read_bytes()
    if dialect not in PYTHON_DOCUMENTS:
        choices = " or ".join(PYTHON_DOCUMENTS)
        raise ValueError(f"a .py file is a python tool: import it with --dialect {choices}")
    code = file.read_bytes().decode("utf-8")  # UnicodeDecodeError is a ValueError
    return json.dumps(PYTHON_DOCUMENTS[dialect](code)).encode()
