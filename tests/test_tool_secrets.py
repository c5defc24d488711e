"""What a tool may do with secrets, decided when it is declared: pure rules, no services."""

import re
from typing import Any

import pytest
from pydantic import ValidationError

from services.registry.dialects import vocode
from services.registry.tool_secrets import (
    extract_signing_secrets,
    require_known,
    signing_secret_name,
    stamp,
)
from shared.contract.tools import Tool
from shared.security.account_secrets import NAME_PATTERN
from tests.dialect_support import example, rejection

MEETING = example("vocode_meeting_booking.json")
SIGNING_SECRET = MEETING["signature_secret"]


def tool(request: dict[str, Any], name: str = "Book") -> Tool:
    return Tool.model_validate({"name": name, "request": request})


# --- literal signing secrets become account secrets -----------------------------------------


def test_a_vocode_signature_secret_becomes_a_reference_to_an_account_secret() -> None:
    parsed = vocode.parse(MEETING)

    extracted = extract_signing_secrets("salon-bot", parsed)

    (name,) = extracted.secrets
    assert extracted.secrets == {name: SIGNING_SECRET}
    assert re.fullmatch(NAME_PATTERN, name)
    assert name.startswith("SIGNING_Meeting_Booking_Assistant_")
    (kept,) = extracted.tools
    signing = kept.http().signing
    assert signing is not None
    assert signing.secrets == [f"{{{{secrets.{name}}}}}"]
    # Everything else is the tool as parsed.
    assert kept.model_copy(update={"request": parsed[0].request}) == parsed[0]


def test_the_source_kept_has_the_reference_in_place_of_the_value() -> None:
    extracted = extract_signing_secrets("salon-bot", vocode.parse(MEETING))
    (name,) = extracted.secrets

    scrubbed = extracted.scrub(MEETING)

    assert scrubbed == {**MEETING, "signature_secret": f"{{{{secrets.{name}}}}}"}
    assert SIGNING_SECRET not in str(scrubbed)
    assert extracted.scrub(f"<x>{SIGNING_SECRET}</x>") == f"<x>{{{{secrets.{name}}}}}</x>"


def test_only_literals_are_extracted_and_references_are_kept() -> None:
    signing = {"scheme": "standard_webhooks", "secrets": ["{{secrets.HOOK}}", "whsec_bGl0"]}
    parsed = tool({"url": "https://api.example.com/", "signing": signing})

    extracted = extract_signing_secrets("a", [parsed])

    name = signing_secret_name("a", "Book", 1)
    assert extracted.secrets == {name: "whsec_bGl0"}
    signing_spec = extracted.tools[0].http().signing
    assert signing_spec is not None
    assert signing_spec.secrets == [
        "{{secrets.HOOK}}",
        f"{{{{secrets.{name}}}}}",
    ]


def test_a_tool_without_literals_is_left_as_it_is() -> None:
    parsed = [tool({"url": "https://api.example.com/", "headers": {"K": "{{secrets.K}}"}})]

    extracted = extract_signing_secrets("a", parsed)

    assert (extracted.tools, extracted.secrets, extracted.scrub(MEETING)) == (parsed, {}, MEETING)


def test_derived_names_are_stable_per_agent_and_fit_the_name_rule() -> None:
    long_name = "T" * 64

    assert signing_secret_name("a", "Book", 0) == signing_secret_name("a", "Book", 0)
    assert signing_secret_name("a", "Book", 0) != signing_secret_name("b", "Book", 0)
    assert signing_secret_name("a", "Book", 0) != signing_secret_name("a", "Book", 1)
    assert re.fullmatch(NAME_PATTERN, signing_secret_name("a", long_name, 0))
    assert re.fullmatch(NAME_PATTERN, signing_secret_name("a", "9lives", 0))


def test_stamping_records_whose_a_tool_is_and_who_registered_it() -> None:
    (stamped,) = stamp([tool({"url": "https://api.example.com/"})], "acme", platform=False)

    assert (stamped.owner_account, stamped.platform) == ("acme", False)
    assert "owner_account" not in stamped.public_dump()
    assert "platform" not in stamped.public_dump()


# --- an account's tool refers only to its account's secrets ---------------------------------


def test_an_unknown_secret_is_a_422_naming_each_one_and_where() -> None:
    tools = [
        tool({"url": "https://api.example.com/", "headers": {"K": "{{secrets.KNOWN}}"}}, "A"),
        tool({"url": "https://api.example.com/", "query": {"k": "{{secrets.OTHERS}}"}}, "B"),
    ]

    error = rejection(lambda: require_known(tools, "acme", {"KNOWN"}))

    assert (error.status, error.code) == (422, "unknown_secret")
    assert error.message == (
        "account 'acme' has no secret OTHERS: set it first with "
        "PUT /v1/accounts/acme/secrets/{NAME}"
    )
    assert error.details == {"account_id": "acme", "missing": {"tools[1]": ["OTHERS"]}}


def test_known_secrets_pass() -> None:
    tools = [tool({"url": "https://api.example.com/", "headers": {"K": "{{secrets.KNOWN}}"}})]

    require_known(tools, "acme", {"KNOWN"})


# --- hosts the LLM chooses ------------------------------------------------------------------

CHOSEN = "http://{{input.host}}/hook"


@pytest.mark.parametrize(
    "request_fields",
    [
        {"url": CHOSEN, "headers": {"Authorization": "Bearer {{secrets.K}}"}},
        {"url": CHOSEN, "body": {"key": "{{secrets.K}}"}},
        {"url": "https://api.{{input.region}}.example.com/", "query": {"k": "{{secrets.K}}"}},
        {"url": CHOSEN, "signing": {"scheme": "standard_webhooks", "secrets": ["whsec_YQ=="]}},
    ],
    ids=["header", "body", "part-of-host", "signing"],
)
def test_secrets_or_a_signature_to_a_host_the_llm_picks_need_allowed_hosts(
    request_fields: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError, match="must list the hosts it may call"):
        tool(request_fields)

    allowed = tool({**request_fields, "allowed_hosts": ["api.example.com"]})
    assert allowed.http().allowed_hosts == ["api.example.com"]


@pytest.mark.parametrize(
    "url",
    [CHOSEN, "https://{{context.Domain}}/hook", "https://api.example.com/{{input.path}}"],
    ids=["no-secrets", "host-from-context", "path-from-input"],
)
def test_other_templated_urls_need_nothing(url: str) -> None:
    headers = {} if url == CHOSEN else {"Authorization": "Bearer {{secrets.K}}"}

    assert tool({"url": url, "headers": headers}).http().allowed_hosts is None


def test_allowed_hosts_are_host_names_compared_without_case() -> None:
    spec = tool({"url": CHOSEN, "allowed_hosts": ["API.Example.com", "[::1]", "10.0.0.7"]}).http()

    assert spec.allowed_hosts == ["api.example.com", "::1", "10.0.0.7"]
    assert spec.allows_host("api.example.COM")
    assert not spec.allows_host("evil.example.com")
    assert not spec.allows_host(None)


@pytest.mark.parametrize("entry", ["https://api.example.com", "api.example.com:443", "a/b", ""])
def test_an_allowed_host_with_scheme_port_or_path_is_refused(entry: str) -> None:
    with pytest.raises(ValidationError, match="are not host names"):
        tool({"url": CHOSEN, "allowed_hosts": [entry]})


def test_a_fixed_host_outside_allowed_hosts_is_refused() -> None:
    with pytest.raises(ValidationError, match=re.escape("host 'api.example.com' is not among")):
        tool({"url": "https://api.example.com/x", "allowed_hosts": ["other.example.com"]})
