"""``midcall runtime-creds ACCOUNT``: runtime credentials of an account, through the registry.

Prints a new credential (its password shown this once) as JSON; ``--list``
prints the account's credentials without passwords; ``--revoke ID`` revokes one.
"""

import json
import sys

import httpx

from services.tool_import import message
from shared.security.api_keys import bearer


def runtime_creds(registry: str, key: str, account: str, listing: bool, revoke: str | None) -> int:
    url = f"{registry.rstrip('/')}/v1/accounts/{account}/runtime-credentials"
    method, expected = ("POST", 201)
    if listing:
        method, expected = ("GET", 200)
    if revoke is not None:
        method, expected, url = ("DELETE", 204, f"{url}/{revoke}")
    try:
        response = httpx.request(method, url, headers=bearer(key), timeout=30)
    except httpx.TransportError as exc:
        print(f"cannot reach the registry at {registry}: {exc}", file=sys.stderr)
        return 2
    if response.status_code != expected:
        print(f"refused ({response.status_code}): {message(response)}", file=sys.stderr)
        return 1
    if response.content:
        print(json.dumps(response.json(), indent=2))
    return 0
