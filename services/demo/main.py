"""``midcall demo``: the fabric on embedded defaults, a salon API, one scripted conversation.

The conversation is played exactly as a voice runtime would: plain nats-py on
the public subjects (see services/demo/runtime.py).
"""

import asyncio
import json
import secrets
import time
from typing import Any

import httpx

from services.demo.runtime import Runtime, new_traceparent
from services.demo.salon_api import SalonApi
from services.demo.script import SCRIPT, SECRET_NAME, Turn, tools
from services.supervisor import Fabric
from shared.fabric.nats_server import free_port
from shared.security.api_keys import bearer
from shared.settings import Settings

AGENT = "salon-bot"
ACCOUNT = "acme-salons"
CALLER = {"From": "+12223334444", "To": "+15556667777", "Session": "demo"}


async def run_demo(settings: Settings) -> int:
    api_key = secrets.token_hex(8)
    salon = SalonApi(api_key)
    api_url = await salon.start()
    settings = settings.model_copy(
        update={"registry_port": free_port(), "billing_port": free_port()}
    )
    fabric = Fabric(
        settings,
        extra_env={
            f"MIDCALL_SECRET_{SECRET_NAME}": api_key,
            "MIDCALL_ALLOW_DESTINATIONS": "127.0.0.1",  # the salon API lives on loopback
            "MIDCALL_REGISTRY_PORT": str(settings.registry_port),
            "MIDCALL_BILLING_PORT": str(settings.billing_port),
        },
    )
    try:
        started = time.perf_counter()
        await fabric.start()
        print(
            f"Fabric up in {time.perf_counter() - started:.1f} s: NATS {fabric.nats_url}, "
            f"salon API {api_url}\n"
        )
        await _play(settings, fabric, api_url)
    finally:
        await fabric.stop()
        await salon.stop()
    return 0


async def _play(settings: Settings, fabric: Fabric, api_url: str) -> None:
    registry = f"http://{settings.host}:{settings.registry_port}"
    billing = f"http://{settings.host}:{settings.billing_port}"
    conversation = f"demo-{secrets.token_hex(4)}"
    async with httpx.AsyncClient(timeout=10, headers=bearer(fabric.admin_key)) as http:
        await _register(http, registry, api_url)
        # As a runtime connects: its own user, allowed only the contract's subjects.
        runtime = await Runtime.connect(fabric.nats_url, **fabric.runtime_options())
        await runtime.listen(conversation)
        accepted = 0
        for number, turn in enumerate(SCRIPT, 1):
            accepted += await _turn(runtime, conversation, f"{conversation}-{number}", turn)
        await runtime.end(conversation)
        await runtime.close()
        await _bill(http, billing, conversation, accepted)


async def _register(http: httpx.AsyncClient, registry: str, api_url: str) -> None:
    agent = {"account_id": ACCOUNT, "name": "Salon receptionist"}
    (await http.put(f"{registry}/v1/agents/{AGENT}", json=agent)).raise_for_status()
    response = await http.post(
        f"{registry}/v1/agents/{AGENT}/tools", json={"tools": tools(api_url)}
    )
    response.raise_for_status()
    names = ", ".join(tool["name"] for tool in response.json()["tools"])
    print(f"Registered for agent {AGENT} (account {ACCOUNT}): {names}\n")


async def _turn(runtime: Runtime, conversation: str, call_id: str, turn: Turn) -> bool:
    """Play one turn; True when the call was accepted (and so will be billed)."""
    traceparent, trace_id = new_traceparent()
    call = {
        "call_id": call_id,
        "conversation_id": conversation,
        "agent_id": AGENT,
        "tool": turn.tool,
        "arguments": turn.arguments,
        "context": CALLER,
    }
    print(f'Caller: "{turn.says}"')
    print(f"  -> {turn.tool} {json.dumps(turn.arguments)}")
    sent = time.perf_counter()
    await runtime.call(call, traceparent)
    result = await runtime.wait_for(conversation, "result", call_id)
    pending = next(
        (
            e
            for e in runtime.events[conversation]
            if e["_kind"] == "pending" and e["call_id"] == call_id
        ),
        None,
    )
    _show(pending, result, sent, trace_id)
    return pending is not None


def _show(
    pending: dict[str, Any] | None, result: dict[str, Any], sent: float, trace_id: str
) -> None:
    if pending is None:
        print("  <- no pending: the call was not accepted")
    else:
        print(
            f"  <- pending after {_ms(pending, sent)}: speak={pending['speak']} "
            f"speech={json.dumps(pending['speech'])} muted={pending['muted']}"
        )
    outcome = (
        (
            f"HTTP {result['http_status']}, {result['attempts']} attempt(s), "
            f"{result['duration_ms']} ms at the API"
        )
        if result["http_status"]
        else "no request"
    )
    print(f"  <- result after {_ms(result, sent)}: {result['status']} ({outcome})")
    if result["error"]:
        print(f"     error {result['error']['code']}: {result['error']['message']}")
    else:
        print(f"     agent_message: {json.dumps(result['agent_message'])}")
        print(f"     variables: {json.dumps(result['variables'])}")
    print(f"     trace id: {trace_id} (result says {result['trace_id']})\n")


def _ms(event: dict[str, Any], sent: float) -> str:
    return f"{(event['_received'] - sent) * 1000:.1f} ms"


async def _bill(http: httpx.AsyncClient, billing: str, conversation: str, calls: int) -> None:
    """Billing is eventually consistent: wait (bounded) until it has every call and the end."""
    url = f"{billing}/v1/usage/conversations/{conversation}"
    async with asyncio.timeout(10):
        while True:
            response = await http.get(url)
            summary = response.json() if response.status_code == 200 else {}
            if summary.get("ended") and len(summary["calls"]) >= calls:
                break
            await asyncio.sleep(0.1)
    print(f"Billing for {conversation} (ended={summary['ended']}):")
    for record in summary["calls"]:
        print(
            f"  {record['call_id']}: {record['tool']} {record['status']}, "
            f"{record['input_tokens']}+{record['output_tokens']} tokens, "
            f"{record['units']} units"
        )
    totals = summary["totals"]
    print(f"  total: {totals['calls']} calls, {totals['errors']} errors, {totals['units']} units")
