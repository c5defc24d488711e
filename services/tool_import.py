"""``midcall tools import``: a platform's tool document from a file, through the registry.

It goes through the REST API, not the database, so the registry validates it
and the catalog distributes it exactly as for any other client.
"""

import json
import sys
from pathlib import Path

import httpx

from shared.security.api_keys import bearer

CONTENT_TYPES = {"xml": "application/xml"}


def import_tools(registry: str, key: str, file: Path, agent: str, dialect: str) -> int:
    try:
        document = file.read_bytes()
    except OSError as exc:
        print(f"cannot read {file}: {exc.strerror}", file=sys.stderr)
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
