"""Signature headers for a rendered request, so the API can tell it came from Midcall.

Pure: no I/O, no clock. The caller resolves the ``{{secrets.NAME}}`` templates
and passes the time to sign with.
"""

import base64
import hashlib
import hmac
from datetime import datetime

from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.tools import Signing

STANDARD_WEBHOOKS_PREFIX = "whsec_"

# The LLM relays this; the details name the fault for operators, never a secret's value.
NOT_SET_UP = (
    "This tool is not set up correctly, so it cannot be used right now. "
    "Apologize and offer another way to help."
)


def signature_headers(
    signing: Signing, secrets: list[str], call_id: str, body: bytes, now: datetime
) -> dict[str, str]:
    """The headers that sign ``body`` by ``signing.scheme``, with the resolved ``secrets``."""
    if signing.scheme == "vocode":
        [secret] = secrets
        return {"x-vocode-signature": _hmac_base64(_key(secret), body)}
    return _standard_webhooks(secrets, call_id, body, now)


def _standard_webhooks(
    secrets: list[str], call_id: str, body: bytes, now: datetime
) -> dict[str, str]:
    # The spec says an id the caller controls must not contain ".": the signed
    # content is "id.timestamp.body", so a dotted id makes the parts ambiguous.
    if "." in call_id:
        raise CallRejected(ErrorCode.INTERNAL, NOT_SET_UP, {"signing": "call_id contains '.'"})
    timestamp = str(_unix_seconds(now))
    content = f"{call_id}.{timestamp}.".encode() + body
    # One signature per secret lets a receiver rotate its secret without downtime.
    signatures = [
        f"v1,{_hmac_base64(_key(s.removeprefix(STANDARD_WEBHOOKS_PREFIX)), content)}"
        for s in secrets
    ]
    return {
        "webhook-id": call_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": " ".join(signatures),
    }


def _unix_seconds(now: datetime) -> int:
    # A naive datetime would be read as local time and sign a skewed timestamp.
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return int(now.timestamp())


def _key(secret: str) -> bytes:
    try:
        key = base64.b64decode(secret, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII secret
        key = b""
    if not key:
        raise CallRejected(
            ErrorCode.INTERNAL, NOT_SET_UP, {"signing": "a secret is empty or not base64"}
        )
    return key


def _hmac_base64(key: bytes, content: bytes) -> str:
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
