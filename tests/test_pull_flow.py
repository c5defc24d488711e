"""The pull flow's answer to refused requests (shared.fabric.pull_flow), without a server."""

import asyncio
from typing import Any

import pytest
from nats.aio.msg import Msg

from shared.fabric import pull_flow
from shared.fabric.pull_flow import Durable, PullFlow


def _refusal() -> Msg:
    # What a consumer whose leader is changing answers each waiting request with.
    headers = {pull_flow.STATUS_HEADER: "409", "Description": "Leadership Change"}
    return Msg(_client=None, subject="_INBOX.x", headers=headers)  # type: ignore[arg-type]


async def test_requests_refused_together_are_asked_again_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pull_flow, "REFUSED_RETRY_S", 0.05)
    flow = PullFlow(None, Durable("S", "s.>", "d"), lambda _: None, lambda: 10, 10)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    call_later = loop.call_later

    def counted(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        scheduled.append(delay)
        return call_later(delay, callback, *args)

    monkeypatch.setattr(loop, "call_later", counted)

    for _ in range(5):
        await flow._received(_refusal())
    assert scheduled == [0.05]
    assert not flow._wake.is_set()  # not asked again at once: the server is saying no

    async with asyncio.timeout(1):
        await flow._wake.wait()
    flow._wake.clear()
    await flow._received(_refusal())  # a refusal after that wake-up is retried again
    assert scheduled == [0.05, 0.05]
