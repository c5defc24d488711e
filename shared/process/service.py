"""Running one service process: start, wait for SIGINT/SIGTERM, stop cleanly.

Each service's composition root builds a ``Runnable``; this module owns the
process life cycle so that every service shuts down the same way: stop taking
HTTP requests, drain the NATS connection (in-flight handlers finish, nothing
new is fetched), then exit.
"""

import asyncio
import logging
import signal
from typing import Protocol

from faststream.nats import NatsBroker

from shared.contract import subjects

log = logging.getLogger("midcall.service")


class Runnable(Protocol):
    name: str
    broker: NatsBroker

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_until_signal(service: Runnable) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await service.start()
    await service.broker.publish(service.name, subjects.ready(service.name))
    log.info("%s started", service.name)
    await stopping.wait()
    log.info("%s stopping", service.name)
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Ctrl-C reaches us and `midcall up` sends SIGTERM too: once stopping, further
        # signals are ignored rather than hitting a closing event loop.
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    await service.stop()
