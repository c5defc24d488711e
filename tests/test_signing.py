"""Request signing, checked against each scheme's own receiver: pure, no network."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.http_executor.signing import signature_headers
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.tools import Signing

KEY = b"midcall-test-key-0123456789abcdef"
OLD_KEY = b"previous-key-0123456789abcdefghij"
SECRET = base64.b64encode(KEY).decode()
WHSEC = "whsec_" + SECRET
OLD_WHSEC = "whsec_" + base64.b64encode(OLD_KEY).decode()
T0 = datetime(2026, 11, 21, 10, 0, 0, 987000, tzinfo=UTC)

VOCODE = Signing(scheme="vocode", secrets=["{{secrets.VOCODE_SECRET}}"])
WEBHOOKS = Signing(scheme="standard_webhooks", secrets=["{{secrets.NEW}}", "{{secrets.OLD}}"])

# The executor sends Vocode bodies as json.dumps(...) with Python's defaults.
BOOKING = json.dumps(
    {"payload": {"name": "José Núñez", "time": "10:30am", "note": "窓側の席 ✓", "guests": 2}}
).encode()


class ReceivedRequest:
    """The receiver's view of the request: ``await request.json()`` parses the body."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def json(self) -> Any:
        return json.loads(self.body)


async def vocode_receiver_accepts(request: ReceivedRequest, signature: str, secret: str) -> bool:
    # Vocode's documented check, verbatim: https://docs.vocode.dev/open-source/external-action
    # ("Signature Validation"). It re-serializes the parsed body instead of reading its bytes.
    return hmac.compare_digest(
        base64.b64decode(signature),
        hmac.new(
            base64.b64decode(secret),
            json.dumps(await request.json()).encode(),
            hashlib.sha256,
        ).digest(),
    )


def vocode_signature(body: bytes) -> str:
    return signature_headers(VOCODE, [SECRET], "call-1", body, T0)["x-vocode-signature"]


async def test_vocode_receiver_accepts_a_python_json_body_with_non_ascii_arguments() -> None:
    signature = vocode_signature(BOOKING)

    assert await vocode_receiver_accepts(ReceivedRequest(BOOKING), signature, SECRET)


async def test_vocode_receiver_rejects_a_tampered_body() -> None:
    signature = vocode_signature(BOOKING)
    tampered = BOOKING.replace(b'"guests": 2', b'"guests": 9')

    assert not await vocode_receiver_accepts(ReceivedRequest(tampered), signature, SECRET)


async def test_vocode_receiver_rejects_compact_json_which_it_does_not_reproduce() -> None:
    # Why the executor must send Vocode bodies in json_style "python".
    compact = json.dumps(json.loads(BOOKING), separators=(",", ":")).encode()

    signature = vocode_signature(compact)

    assert not await vocode_receiver_accepts(ReceivedRequest(compact), signature, SECRET)


def test_vocode_header_is_pinned() -> None:
    expected = base64.b64encode(hmac.new(KEY, BOOKING, hashlib.sha256).digest()).decode()

    assert signature_headers(VOCODE, [SECRET], "call-1", BOOKING, T0) == {
        "x-vocode-signature": expected
    }


def test_standard_webhooks_headers_are_pinned() -> None:
    body = b'{"date":"2026-11-22"}'
    content = b'call-7.1795255200.{"date":"2026-11-22"}'
    new = base64.b64encode(hmac.new(KEY, content, hashlib.sha256).digest()).decode()
    old = base64.b64encode(hmac.new(OLD_KEY, content, hashlib.sha256).digest()).decode()

    assert signature_headers(WEBHOOKS, [WHSEC, OLD_WHSEC], "call-7", body, T0) == {
        "webhook-id": "call-7",
        "webhook-timestamp": "1795255200",
        "webhook-signature": f"v1,{new} v1,{old}",
    }


def test_standard_webhooks_accepts_a_secret_without_the_whsec_prefix() -> None:
    with_prefix = signature_headers(WEBHOOKS, [WHSEC], "call-7", b"{}", T0)

    assert signature_headers(WEBHOOKS, [SECRET], "call-7", b"{}", T0) == with_prefix


@pytest.mark.parametrize("receiver_secret", [WHSEC, OLD_WHSEC])
def test_standard_webhooks_library_verifies_with_either_rotated_secret(
    receiver_secret: str,
) -> None:
    body = json.dumps({"date": "2026-11-22", "name": "Zoë"}, ensure_ascii=False).encode()
    headers = signature_headers(WEBHOOKS, [WHSEC, OLD_WHSEC], "call-7", body, datetime.now(UTC))

    assert Webhook(receiver_secret).verify(body, headers) == {"date": "2026-11-22", "name": "Zoë"}


def test_standard_webhooks_library_rejects_a_secret_that_did_not_sign() -> None:
    headers = signature_headers(WEBHOOKS, [WHSEC], "call-7", b"{}", datetime.now(UTC))
    other = "whsec_" + base64.b64encode(b"someone-else-0123456789abcdefgh").decode()

    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(b"{}", headers)


def test_standard_webhooks_library_rejects_a_tampered_body() -> None:
    headers = signature_headers(WEBHOOKS, [WHSEC], "call-7", b'{"guests":2}', datetime.now(UTC))

    with pytest.raises(WebhookVerificationError):
        Webhook(WHSEC).verify(b'{"guests":9}', headers)


@pytest.mark.parametrize("age", [timedelta(minutes=6), timedelta(minutes=-6)])
def test_standard_webhooks_library_rejects_a_timestamp_outside_its_tolerance(
    age: timedelta,
) -> None:
    headers = signature_headers(WEBHOOKS, [WHSEC], "call-7", b"{}", datetime.now(UTC) - age)

    with pytest.raises(WebhookVerificationError, match="timestamp too"):
        Webhook(WHSEC).verify(b"{}", headers)


@pytest.mark.parametrize(
    ("signing", "secrets"),
    [
        (VOCODE, ["not base64!"]),
        (VOCODE, [""]),
        (VOCODE, [SECRET + "\n"]),
        (WEBHOOKS, [WHSEC, "whsec_%%%%"]),
        (WEBHOOKS, ["whsec_"]),
        (WEBHOOKS, ["whsec_ключ"]),
    ],
)
def test_an_invalid_secret_is_an_internal_error_that_names_no_secret(
    signing: Signing, secrets: list[str]
) -> None:
    with pytest.raises(CallRejected) as caught:
        signature_headers(signing, secrets, "call-7", b"{}", T0)

    assert caught.value.code == ErrorCode.INTERNAL
    assert "not set up correctly" in caught.value.message
    told = caught.value.message + json.dumps(caught.value.details)
    values = [secret.removeprefix("whsec_").strip() for secret in secrets]
    assert not any(value in told for value in values if value)


def test_a_dotted_call_id_is_refused_because_the_spec_forbids_it() -> None:
    with pytest.raises(CallRejected) as caught:
        signature_headers(WEBHOOKS, [WHSEC], "call.7", b"{}", T0)

    assert caught.value.code == ErrorCode.INTERNAL


def test_a_naive_time_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        signature_headers(WEBHOOKS, [WHSEC], "call-7", b"{}", datetime(2026, 11, 21, 10))
