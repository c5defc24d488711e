"""Callback tokens: how a tool's API proves which call it reports on.

Every request of an HTTP tool carries ``Midcall-Callback-Token`` (and
``Midcall-Callback-Url``, where to report). An API that answered ``202
Accepted`` reports progress and its completion to the registry with that
header alone: no account key, which its developers would otherwise have to
hold and could leak for every call of the account.

The token is an HMAC-SHA256 over the call's address (account, the runtime's
account, conversation, call id, run) and its expiry, keyed by a key derived
from the master key that registry and executors already share. So the
registry checks it without a lookup, no token verifies for another call, and
none outlives its call. A completion is accepted once: its key in the
completions bucket is created once (services.registry.callbacks_api).
"""

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.contract.addressing import Conversation
from shared.contract.events import ExecuteRequest
from shared.fabric.call_marks import run_key

TOKEN_HEADER = "Midcall-Callback-Token"
URL_HEADER = "Midcall-Callback-Url"
VERSION = "v1"
# A token outlives its call's deadline by this much: the completion of a call answered
# ``timeout`` then gets a clear "already answered" instead of "expired".
EXPIRY_GRACE_S = 60


class CallbackGrant(BaseModel):
    """What a token says: which run of which call, and until when (Unix seconds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str
    runtime_account: str | None
    conversation_id: str
    call_id: str
    attempt: int
    expires: int

    @property
    def conversation(self) -> Conversation:
        return Conversation(self.account_id, self.conversation_id, self.runtime_account)

    @property
    def completion_key(self) -> str:
        """The run's key in the completions bucket (as in the call's marks)."""
        return run_key(self.conversation.key, self.call_id, self.attempt)


@dataclass(frozen=True)
class TokenRefused(Exception):
    """A token that does not grant what was asked: the HTTP status and why."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


def signing_key(master_key: bytes) -> bytes:
    """The tokens' own key, derived from the master key (which also seals secrets)."""
    return hmac.new(master_key, b"midcall callback tokens v1", hashlib.sha256).digest()


def grant_for(work: ExecuteRequest) -> CallbackGrant:
    return CallbackGrant(
        account_id=work.account_id,
        runtime_account=work.runtime_account,
        conversation_id=work.call.conversation_id,
        call_id=work.call.call_id,
        attempt=work.attempt,
        expires=int(work.deadline_at.timestamp()) + EXPIRY_GRACE_S,
    )


def issue(grant: CallbackGrant, key: bytes) -> str:
    payload = _b64(grant.model_dump_json().encode())
    return f"{VERSION}.{payload}.{_b64(_mac(key, payload))}"


def verify(token: str | None, call_id: str, key: bytes, now: float) -> CallbackGrant:
    """The grant of ``token`` for the call ``call_id``, or ``TokenRefused``."""
    if not token:
        raise TokenRefused(
            401,
            f"The {TOKEN_HEADER} header is missing: send the one Midcall "
            "sent with the call's request.",
        )
    version, _, rest = token.partition(".")
    payload, _, mac = rest.partition(".")
    if version != VERSION or not hmac.compare_digest(_unb64(mac), _mac(key, payload)):
        raise TokenRefused(403, f"The {TOKEN_HEADER} is not one Midcall issued.")
    try:
        grant = CallbackGrant.model_validate_json(_unb64(payload))
    except ValidationError as exc:  # signed by us, so only an older version's shape
        raise TokenRefused(403, f"The {TOKEN_HEADER} is not one Midcall issued.") from exc
    if grant.call_id != call_id:
        raise TokenRefused(403, f"The {TOKEN_HEADER} is another call's, not {call_id}'s.")
    if now > grant.expires:
        raise TokenRefused(410, "The call's deadline has passed: it was answered without this.")
    return grant


@dataclass(frozen=True)
class CallbackHeaders:
    """What every request of a call carries, so its API can report back on its own."""

    key: bytes
    url: str  # the registry's /v1/calls

    def for_work(self, work: ExecuteRequest) -> dict[str, str]:
        return {
            TOKEN_HEADER: issue(grant_for(work), self.key),
            URL_HEADER: f"{self.url}/{quote(work.call.call_id, safe='')}",
        }


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, f"{VERSION}.{payload}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return b""
