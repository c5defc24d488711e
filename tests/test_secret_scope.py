"""Which secrets a work item gets at the executor, and where its request may go."""

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.http_executor.execute import Executor
from shared.contract.events import ExecuteRequest
from shared.contract.tools import DECLARED_BEFORE, Tool
from shared.security import secret_scope
from shared.security.account_secrets import slot
from shared.security.destinations import DestinationPolicy
from shared.security.secret_box import SecretBox
from shared.security.secret_scope import AccountSecrets, SecretScope
from tests.factories import work_item
from tests.test_execute import ScriptedApi

BOX = SecretBox(bytes(range(32)))
URL = "https://api.example.com/book"
BEARER = {"Authorization": "Bearer {{secrets.TOKEN}}"}


@dataclass
class Entry:
    value: bytes | None


class Bucket:
    """The ``midcall_secrets`` bucket as the executor reads it: sealed values by slot."""

    def __init__(self) -> None:
        self.sealed: dict[str, bytes] = {}
        self.gets: list[str] = []

    def put(self, account_id: str, name: str, value: str, box: SecretBox = BOX) -> None:
        where = slot(account_id, name)
        self.sealed[where] = box.seal(value, where).encode()

    async def get(self, key: str) -> Entry:
        self.gets.append(key)
        if key not in self.sealed:
            raise KeyNotFoundError
        return Entry(self.sealed[key])


def scope(bucket: Bucket, **platform: str) -> SecretScope:
    return SecretScope(platform, AccountSecrets(bucket, BOX))  # type: ignore[arg-type]


def work(
    request: dict[str, Any], arguments: dict[str, Any] | None = None, **tool: Any
) -> ExecuteRequest:
    return work_item({"url": URL, **request}, arguments, **tool)


async def test_an_accounts_tool_gets_its_accounts_secrets_only() -> None:
    bucket = Bucket()
    bucket.put("acme", "TOKEN", "acme-token")
    bucket.put("globex", "OTHER", "globex-token")
    request = {"headers": {"A": "{{secrets.TOKEN}}", "B": "{{secrets.OTHER}}"}}

    found = await scope(bucket, OTHER="platform").for_work(work(request, owner_account="acme"))

    assert found == {"TOKEN": "acme-token"}


async def test_a_platform_tool_gets_the_platforms_secrets_first_then_its_accounts() -> None:
    bucket = Bucket()
    bucket.put("acme", "TOKEN", "acme-token")
    bucket.put("acme", "MINE", "acme-mine")
    request = {"headers": {"A": "{{secrets.TOKEN}}", "B": "{{secrets.MINE}}"}}
    item = work(request, owner_account="acme", platform=True)

    assert await scope(bucket, TOKEN="platform").for_work(item) == {
        "TOKEN": "platform",
        "MINE": "acme-mine",
    }


async def test_the_account_is_the_tools_owner_never_the_one_the_call_names() -> None:
    bucket = Bucket()
    bucket.put("globex", "TOKEN", "globex-token")
    item = work({"headers": BEARER}, owner_account="acme")
    item.account_id = "globex"  # what a runtime may put in its ToolCall

    assert await scope(bucket).for_work(item) == {}


async def test_a_tool_with_no_owner_gets_no_account_secrets() -> None:
    bucket = Bucket()
    bucket.put("acme", "TOKEN", "acme-token")

    assert await scope(bucket).for_work(work({"headers": BEARER})) == {}
    assert bucket.gets == []


async def test_an_opened_secret_is_reused_for_a_moment_then_read_again() -> None:
    now = [100.0]
    bucket = Bucket()
    bucket.put("acme", "TOKEN", "first")
    item = work({"headers": BEARER}, owner_account="acme")
    reader = SecretScope({}, AccountSecrets(bucket, BOX, clock=lambda: now[0]))  # type: ignore[arg-type]

    assert await reader.for_work(item) == {"TOKEN": "first"}
    bucket.put("acme", "TOKEN", "second")
    now[0] += secret_scope.CACHE_S / 2
    assert await reader.for_work(item) == {"TOKEN": "first"}
    now[0] += secret_scope.CACHE_S
    assert await reader.for_work(item) == {"TOKEN": "second"}
    del bucket.sealed[slot("acme", "TOKEN")]
    now[0] += secret_scope.CACHE_S
    assert await reader.for_work(item) == {}


async def test_a_secret_sealed_under_another_master_key_is_absent_and_logged_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bucket = Bucket()
    bucket.put("acme", "TOKEN", "sealed-elsewhere", box=SecretBox(bytes(32)))

    with caplog.at_level(logging.ERROR, logger="midcall.secrets"):
        found = await scope(bucket).for_work(work({"headers": BEARER}, owner_account="acme"))

    assert found == {}
    assert "acme.TOKEN does not open" in caplog.text
    assert "sealed-elsewhere" not in caplog.text


async def test_a_secret_the_tool_may_not_use_fails_the_call_as_not_set_up() -> None:
    api = ScriptedApi((200,))
    executor = Executor(api, DestinationPolicy("api.example.com"), scope(Bucket(), TOKEN="p"))

    outcome = await executor.run(work({"headers": BEARER}, owner_account="acme"))

    assert api.seen == []
    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.failure.details) == (
        "internal",
        {"missing_secrets": ["TOKEN"]},
    )


async def test_a_host_outside_allowed_hosts_is_a_blocked_destination() -> None:
    api = ScriptedApi((200,))
    executor = Executor(api, DestinationPolicy(), {"TOKEN": "t"})
    request = {
        "url": "https://{{input.host}}/hook",
        "headers": BEARER,
        "allowed_hosts": ["api.example.com"],
    }

    allowed = await executor.run(work(request, {"host": "API.example.com"}, platform=True))
    refused = await executor.run(work(request, {"host": "evil.example"}, platform=True))

    assert allowed.failure is None
    assert refused.failure is not None
    assert (refused.failure.code, refused.failure.details) == (
        "blocked_destination",
        {"host": "evil.example", "allowed_hosts": ["api.example.com"]},
    )
    assert [r.url for r in api.seen] == ["https://API.example.com/hook"]


async def test_a_tool_declared_before_the_rule_still_sends_no_secret_to_a_chosen_host() -> None:
    bucket = Bucket()
    bucket.put("acme", "TOKEN", "acme-token")
    request = {"url": "https://{{input.host}}/hook", "headers": BEARER}
    legacy = Tool.model_validate({"name": "T", "request": request}, context=DECLARED_BEFORE)
    item = work({}, {"host": "evil.example"})
    item.tool = legacy.model_copy(update={"owner_account": "acme"})
    api = ScriptedApi((200,))

    outcome = await Executor(api, DestinationPolicy(), scope(bucket)).run(item)

    assert outcome.failure is not None
    assert outcome.failure.code == "blocked_destination"
    assert (api.seen, bucket.gets) == ([], [])  # refused before any secret was opened


async def test_a_secret_in_the_path_is_kept_out_of_the_span(spans: InMemorySpanExporter) -> None:
    api = ScriptedApi((200,))
    executor = Executor(api, DestinationPolicy(), {"HOOK": "path-secret/42"})
    item = work({"url": "https://api.example.com/hook/{{secrets.HOOK}}"}, platform=True)

    await executor.run(item)

    assert api.seen[0].url == "https://api.example.com/hook/path-secret%2F42"
    (span,) = [s for s in spans.get_finished_spans() if s.name == "HTTP POST"]
    assert span.attributes is not None
    assert span.attributes["url.path"] == "/hook/***"
    assert "path-secret" not in str(dict(span.attributes))
