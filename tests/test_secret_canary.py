"""A canary secret rendered into every part of a request appears nowhere Midcall writes.

The fabric runs in-process on a real nats-server. Account ``acme`` sets the
canary as its secret ``CANARY`` (and a private address as ``PRIVATE_IP``);
its agent's tools render them into a header's name and value, the URL's
host, path and query (names and values) and the body (keys and values). One
tool reaches a loopback API, which must get the canary exactly where it was
sent; the others fail, each in its own way, on a host that is the secret.
Then every place Midcall writes is read: the events a runtime hears, NATS
as a whole, failed calls and a replay's dry run over REST, logs, spans and
metrics.
"""

import asyncio
import json
import logging
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from shared.fabric.nats_server import free_port
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric
from tests.test_spine import new_call, place

AGENT = "canary-bot"
CANARY = f"canary-{secrets.token_hex(8)}"
PRIVATE_IP = f"10.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
SECRET = "{{secrets.CANARY}}"
# Names the test's resolver answers for: one resolves where tools may not go (as a
# DNS rebinding would), one to loopback on a port nothing listens on.
REBOUND = f"{CANARY}.rebound.example"
DOWN = f"{CANARY}.down.example"
RETRY_5XX = {"attempts": 2, "on": ["http_5xx"], "backoff_s": 0.01, "non_idempotent": True}


def everywhere(api_url: str) -> dict[str, Any]:
    """The canary in the path, a header's name and value, query names and values, body keys
    and values; its API answers 503, so it fails and is kept for ops."""
    return {
        "name": "Everywhere",
        "request": {
            "url": f"{api_url}/hook/{SECRET}",
            "headers": {f"X-{SECRET}": "header-name", "Authorization": f"Bearer {SECRET}"},
            "query": {"token": SECRET, f"q-{SECRET}": "query-name"},
            "body": {f"b-{SECRET}": SECRET},
            "retry": RETRY_5XX,
        },
    }


def tool(name: str, url: str, **request: Any) -> dict[str, Any]:
    return {"name": name, "request": {"url": url, **request}}


def tools(api_url: str, port: int, closed: int) -> list[dict[str, Any]]:
    return [
        everywhere(api_url),
        # A header name HTTP refuses, with the canary in it.
        tool("BadHeaderName", f"{api_url}/never", headers={f"leak hdr {SECRET}": "v"}),
        # Hosts that are the secret: outside allowed_hosts, a private literal, a name that
        # resolves to a private address, a name whose API is down.
        tool("Elsewhere", f"http://{SECRET}:{port}/x", allowed_hosts=["127.0.0.1"]),
        tool("Private", "http://{{secrets.PRIVATE_IP}}/x"),
        tool("Rebound", f"http://{SECRET}.rebound.example/x"),
        tool("Down", f"http://{SECRET}.down.example:{closed}/x"),
    ]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """REBOUND resolves to a private address, DOWN to loopback; any other name as usual."""
    real = ThreadedResolver.resolve
    answers = {REBOUND: "10.0.0.1", DOWN: "127.0.0.1"}

    async def resolve(
        self: ThreadedResolver, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in answers:
            return await real(self, host, port, family)  # type: ignore[arg-type]
        return [
            ResolveResult(
                hostname=host,
                host=answers[host],
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    monkeypatch.setattr(ThreadedResolver, "resolve", resolve)


@pytest.fixture
async def acme(fabric: Fabric) -> dict[str, str]:
    """acme's key; its agent AGENT, and its secrets CANARY and PRIVATE_IP."""
    key = await fabric.account("acme")
    made = await fabric.registry.put(f"/v1/agents/{AGENT}", json={"account_id": "acme"})
    assert made.status_code == 200, made.text
    await fabric.set_secret("acme", "CANARY", CANARY, headers=key)
    await fabric.set_secret("acme", "PRIVATE_IP", PRIVATE_IP, headers=key)
    return key


def listener(into: list[str]) -> Callable[[Msg], Awaitable[None]]:
    async def heard(msg: Msg) -> None:
        into.append(f"{msg.subject} {msg.headers} {msg.data.decode(errors='replace')}")

    return heard


async def test_a_canary_secret_reaches_the_api_and_nothing_midcall_writes(
    fabric: Fabric,
    api: RecordingApi,
    acme: dict[str, str],
    resolver: None,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    runtime_heard: list[str] = []
    nats_carried: list[str] = []
    await fabric.nc.subscribe("midcall.conv.>", cb=listener(runtime_heard))
    await fabric.nc.subscribe(">", cb=listener(nats_carried))
    port, closed = int(api.url.rpartition(":")[2]), free_port()
    api.reply("POST", f"/hook/{CANARY}", status=503, json={"error": "down for maintenance"})
    posted = await fabric.registry.post(
        f"/v1/agents/{AGENT}/tools", json={"tools": tools(api.url, port, closed)}, headers=acme
    )
    assert posted.status_code == 201, posted.text

    results = {
        name: await call(fabric, name)
        for name in ("Everywhere", "BadHeaderName", "Elsewhere", "Private", "Rebound")
    }
    # Five connections refused open the host's circuit (its metric is labelled by host).
    down = [await call(fabric, "Down") for _ in range(6)]
    await fabric.drained()
    kept = await failed_calls(fabric, acme, count=4 + len(down))
    shown = [await get(fabric, f"/v1/failed/{row['id']}", acme) for row in kept]
    dry_run = await fabric.registry.post(
        "/v1/failed/replay",
        json={"ids": [row["id"] for row in kept], "dry_run": True},
        headers=acme,
    )
    scraped = await fabric.registry.get("/metrics/")
    await fabric.nc.flush()

    # --- where the canary was sent, it arrived -------------------------------------------
    assert len(api.received) == 2  # the Everywhere call and its one retry; nothing else
    for received in api.received:
        assert received.path == f"/hook/{CANARY}"
        assert received.query == [("token", CANARY), (f"q-{CANARY}", "query-name")]
        assert received.header(f"X-{CANARY}") == "header-name"
        assert received.header("Authorization") == f"Bearer {CANARY}"
        assert json.loads(received.body) == {f"b-{CANARY}": CANARY}

    # --- each call failed as it should, naming templates rather than the secret ----------
    assert (results["Everywhere"]["error"]["code"], results["Everywhere"]["http_status"]) == (
        "http_error",
        503,
    )
    assert results["BadHeaderName"]["error"] == {
        "code": "invalid_arguments",
        "message": "The header name template 'leak hdr {{secrets.CANARY}}' does not render "
        "to a name HTTP allows.",
        "details": None,
    }
    blocked = {name: results[name]["error"] for name in ("Elsewhere", "Private", "Rebound")}
    assert {name: (e["code"], e["details"]) for name, e in blocked.items()} == {
        "Elsewhere": (
            "blocked_destination",
            {"host": "{{secrets.CANARY}}", "allowed_hosts": ["127.0.0.1"]},
        ),
        "Private": ("blocked_destination", {"host": "{{secrets.PRIVATE_IP}}"}),
        "Rebound": ("blocked_destination", {"host": "{{secrets.CANARY}}.rebound.example"}),
    }
    assert [(r["error"]["code"], r["error"]["details"]) for r in down] == [
        *[("connection_error", {"request_sent": False})] * 5,
        ("connection_error", {"circuit": "open"}),
    ]

    # --- ops see every failed call, and a dry run shows each secret as *** ----------------
    assert sorted(row["tool"] for row in kept) == sorted(
        ["Everywhere", "Elsewhere", "Private", "Rebound", *["Down"] * 6]
    )
    assert dry_run.status_code == 200, dry_run.text
    planned = {item["call_id"]: item for item in dry_run.json()["items"]}
    by_tool = {row["tool"]: planned[row["call_id"]]["request"] for row in kept}
    assert by_tool["Everywhere"] == {
        "method": "POST",
        "url": f"{api.url}/hook/***?token=***&q-***=query-name",
        "headers": {
            "Accept": "application/json",
            "User-Agent": "midcall/0.1",
            "Idempotency-Key": results["Everywhere"]["call_id"],
            "Content-Type": "application/json",
            "X-***": "header-name",
            "Authorization": "Bearer ***",
        },
        "body": '{"b-***":"***"}',
    }
    assert {name: by_tool[name]["url"] for name in ("Elsewhere", "Private", "Rebound", "Down")} == {
        "Elsewhere": f"http://***:{port}/x",
        "Private": "http://***/x",
        "Rebound": "http://***.rebound.example/x",
        "Down": f"http://***.down.example:{closed}/x",
    }

    # --- spans and metrics name the host as the metric and trace may -----------------------
    http_spans = [s for s in spans.get_finished_spans() if s.name == "HTTP POST"]
    assert {(s.attributes or {}).get("server.address") for s in http_spans} == {
        "127.0.0.1",
        "***.rebound.example",
        "***.down.example",
    }
    assert f'midcall_breaker_open{{host="***.down.example:{closed}"}} 1.0' in scraped.text

    # --- and the canary is nowhere else ----------------------------------------------------
    assert caplog.records
    places = {
        "events a runtime hears (midcall.conv.>)": "\n".join(runtime_heard),
        "every NATS message": "\n".join(nats_carried),
        "failed calls (GET /v1/failed, /v1/failed/{id})": json.dumps(kept) + json.dumps(shown),
        "the replay's dry run": dry_run.text,
        "logs": caplog.text + "\n".join(str(r.args) for r in caplog.records),
        "spans": "\n".join(span.to_json() for span in spans.get_finished_spans()),
        "metrics (GET /metrics/)": scraped.text,
        "metrics (the process's registry)": generate_latest().decode(),
    }
    for value in (CANARY, PRIVATE_IP):
        leaked = [where for where, text in places.items() if value.lower() in text.lower()]
        assert leaked == [], value


async def call(fabric: Fabric, tool_name: str) -> dict[str, Any]:
    """One call of the agent's tool as a runtime places it; its result event."""
    return await place(fabric, new_call(tool=tool_name, agent_id=AGENT))


async def get(fabric: Fabric, path: str, headers: dict[str, str]) -> Any:
    response = await fabric.registry.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def failed_calls(fabric: Fabric, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The agent's failed calls, once the registry has stored ``count`` of them."""
    async with asyncio.timeout(10):
        while True:
            rows = (await get(fabric, "/v1/failed", headers))["failed"]
            if len(rows) >= count:
                return list(rows)
            await asyncio.sleep(0.02)
