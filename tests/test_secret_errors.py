"""A secret rendered into any part of a request is named by its template in errors, never shown.

Issue 13's probe: a secret in a header name came back in ``error.message``, a
secret in the URL's host in ``blocked_destination``'s details. Each failure is
provoked here through the executor's pure core or its ``run``, on no network.
"""

from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from services.http_executor.breaker import Breakers
from services.http_executor.execute import Executor
from shared.calls.client import Sender
from shared.calls.preview import preview
from shared.calls.redaction import RedactedError
from shared.calls.render import RenderedRequest, render_request
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import HttpResponse
from shared.security.destinations import DestinationPolicy
from tests.factories import work_item
from tests.support.dns import resolving_to

SECRET = "Sec-7f3a-Canary"  # mixed case: URL hosts are lowercased on the way


class FailingApi(Sender):
    """A sender that fails every request with ``failure`` and keeps what it was asked to send."""

    def __init__(self, failure: Exception) -> None:
        super().__init__(1, DestinationPolicy(), 1024)
        self.failure = failure
        self.seen: list[RenderedRequest] = []

    async def send(self, request: RenderedRequest, timeout_s: float) -> HttpResponse:
        self.seen.append(request)
        raise self.failure


def platform_work(request: dict[str, Any]) -> Any:
    return work_item(request, platform=True)


# --- named by the template ---------------------------------------------------------------------


def test_a_secret_in_a_header_name_that_http_refuses_is_named_by_its_template() -> None:
    work = work_item(
        {"url": "https://api.example.com/", "headers": {"leak hdr {{secrets.X}}": "v"}}
    )

    with pytest.raises(CallRejected) as rejected:
        render_request(work, {"X": SECRET})

    assert rejected.value.code == ErrorCode.INVALID_ARGUMENTS
    assert rejected.value.message == (
        "The header name template 'leak hdr {{secrets.X}}' does not render to a name HTTP allows."
    )
    assert rejected.value.details is None


@pytest.mark.parametrize("port", ["{{secrets.X}}", "{{input.port}}"])
def test_a_port_that_renders_to_no_number_is_refused_naming_the_template(port: str) -> None:
    url = f"https://api.example.com:{port}/"
    work = work_item({"url": url, "allowed_hosts": ["api.example.com"]}, {"port": SECRET})

    with pytest.raises(CallRejected) as rejected:
        render_request(work, {"X": SECRET})

    assert rejected.value.code == ErrorCode.INVALID_ARGUMENTS
    assert rejected.value.message == (
        f"The URL template '{url}' does not render to a URL that can be called."
    )


def test_a_bad_value_of_a_header_whose_name_holds_a_secret_names_the_template() -> None:
    work = work_item({"url": "https://api.example.com/", "headers": {"X-{{secrets.X}}": "a\nb"}})

    with pytest.raises(CallRejected) as rejected:
        render_request(work, {"X": SECRET})

    assert rejected.value.message == (
        "The value for the 'X-{{secrets.X}}' header cannot contain line breaks "
        "or other control characters."
    )


async def test_a_secret_host_outside_allowed_hosts_is_named_by_its_template() -> None:
    executor = Executor(FailingApi(AssertionError()), DestinationPolicy(), {"HOST": SECRET})
    work = platform_work(
        {"url": "https://{{secrets.HOST}}.example/x", "allowed_hosts": ["api.example.com"]}
    )

    outcome = await executor.run(work)

    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.failure.details) == (
        "blocked_destination",
        {"host": "{{secrets.HOST}}.example", "allowed_hosts": ["api.example.com"]},
    )


async def test_a_secret_literal_host_the_policy_refuses_is_named_by_its_template() -> None:
    api = FailingApi(AssertionError())
    executor = Executor(api, DestinationPolicy(), {"HOST": "10.9.8.7"})

    outcome = await executor.run(platform_work({"url": "http://{{secrets.HOST}}:8080/x"}))

    assert outcome.failure is not None
    # Nothing of the address either: it is the secret, or (embedded_ipv4) part of it.
    assert (outcome.failure.code, outcome.failure.details) == (
        "blocked_destination",
        {"host": "{{secrets.HOST}}"},
    )
    assert api.seen == []


async def test_a_secret_host_the_resolver_refuses_is_named_by_its_template(
    monkeypatch: pytest.MonkeyPatch, spans: InMemorySpanExporter
) -> None:
    resolving_to(monkeypatch, "10.0.0.1")
    policy = DestinationPolicy()
    sender = Sender(1, policy, 1024)
    executor = Executor(sender, policy, {"HOST": SECRET})

    try:
        outcome = await executor.run(platform_work({"url": "http://{{secrets.HOST}}.example/"}))
    finally:
        await sender.close()

    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.failure.details) == (
        "blocked_destination",
        {"host": "{{secrets.HOST}}.example"},
    )
    _assert_hidden_in_spans(spans)


# --- the net under it: the call's secret values hidden in whatever leaves the executor --------


async def test_a_failure_that_quotes_a_secret_leaves_the_executor_with_it_hidden() -> None:
    quoting = CallRejected(
        ErrorCode.CONNECTION_ERROR,
        f"could not reach {SECRET.lower()}",
        {"host": SECRET, "tried": [f"https://{SECRET}/"], SECRET: 1},
    )
    executor = Executor(FailingApi(quoting), DestinationPolicy(), {"TOKEN": SECRET})
    work = platform_work(
        {"url": "https://api.example.com/", "headers": {"Authorization": "{{secrets.TOKEN}}"}}
    )

    outcome = await executor.run(work)

    assert outcome.failure is not None
    assert outcome.failure.model_dump() == {
        "code": "connection_error",
        "message": "could not reach ***",
        "details": {"host": "***", "tried": ["https://***/"], "***": 1},
    }


class EchoingApi(Sender):
    """An API that answers with what it was sent: the secret, in its error text."""

    def __init__(self) -> None:
        super().__init__(1, DestinationPolicy(), 1024)

    async def send(self, request: RenderedRequest, timeout_s: float) -> HttpResponse:
        token = request.headers["Authorization"]
        body = f'{{"error": "token {token} is not valid", "hint": "{token.lower()}"}}'
        return HttpResponse(status=401, content_type="application/json", body=body)


async def test_an_api_that_echoes_a_secret_has_it_hidden_in_its_answer() -> None:
    executor = Executor(EchoingApi(), DestinationPolicy(), {"TOKEN": SECRET})
    work = platform_work(
        {"url": "https://api.example.com/", "headers": {"Authorization": "{{secrets.TOKEN}}"}}
    )

    outcome = await executor.run(work)

    assert outcome.response is not None
    assert outcome.response.status == 401
    assert outcome.response.body == '{"error": "token *** is not valid", "hint": "***"}'


async def test_an_unexpected_failure_that_quotes_a_secret_is_raised_with_it_hidden() -> None:
    broken = ValueError(f"cannot encode header value {SECRET!r}")
    executor = Executor(FailingApi(broken), DestinationPolicy(), {"TOKEN": SECRET})
    work = platform_work(
        {"url": "https://api.example.com/", "headers": {"Authorization": "{{secrets.TOKEN}}"}}
    )

    with pytest.raises(RedactedError) as raised:
        await executor.run(work)

    # Told with its traceback, as a log or a span would have told the original.
    assert "ValueError: cannot encode header value '***'" in str(raised.value)
    assert SECRET not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


async def test_an_unexpected_failure_quoting_no_secret_is_raised_as_it_is() -> None:
    broken = ValueError("no secret here")
    executor = Executor(FailingApi(broken), DestinationPolicy(), {"TOKEN": SECRET})
    work = platform_work(
        {"url": "https://api.example.com/", "headers": {"Authorization": "{{secrets.TOKEN}}"}}
    )

    with pytest.raises(ValueError, match="no secret here") as raised:
        await executor.run(work)

    assert raised.value is broken


async def test_a_secret_host_is_hidden_in_the_span_and_the_breakers_metric(
    spans: InMemorySpanExporter,
) -> None:
    down = aiohttp.ClientConnectionError(f"Cannot connect to host {SECRET.lower()}.example:443")
    executor = Executor(
        FailingApi(down), DestinationPolicy(), {"HOST": SECRET}, Breakers(threshold=1)
    )

    outcome = await executor.run(platform_work({"url": "https://{{secrets.HOST}}.example/"}))

    assert outcome.failure is not None
    assert outcome.failure.code == "connection_error"
    (span,) = _assert_hidden_in_spans(spans)
    assert span.attributes is not None
    assert span.attributes["server.address"] == "***.example"
    assert REGISTRY.get_sample_value("midcall_breaker_open", {"host": "***.example"}) == 1
    assert REGISTRY.get_sample_value("midcall_breaker_open", {"host": f"{SECRET}.example"}) is None


# --- the replay's dry run ----------------------------------------------------------------------


def test_a_dry_run_shows_a_secret_in_the_host_as_stars() -> None:
    work = work_item(
        {
            "url": "https://{{secrets.HOST}}.example/p/{{secrets.HOST}}",
            "method": "GET",
            "query": {"k-{{secrets.HOST}}": "{{secrets.HOST}}"},
        }
    )

    shown = preview(work)

    assert shown.url == "https://***.example/p/***?k-***=***"


def _assert_hidden_in_spans(spans: InMemorySpanExporter) -> list[Any]:
    """The executor's HTTP spans, checked to hold no form of SECRET (exception events too)."""
    http = [s for s in spans.get_finished_spans() if s.name.startswith("HTTP ")]
    assert http
    for span in http:
        assert SECRET.lower() not in span.to_json().lower()
        assert [e.name for e in span.events] == ["exception"]
    return http
