"""The services ``midcall`` can run, by name: the one list of them."""

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.settings import Settings, servers

if TYPE_CHECKING:  # the service module imports FastStream; `keep_out` must come first
    from shared.process.service import Runnable


def _registry(settings: Settings) -> "Runnable":
    from services.registry.main import RegistryService

    return RegistryService(settings)


def _dispatcher(settings: Settings) -> "Runnable":
    from services.dispatcher.main import DispatcherService

    return DispatcherService(settings)


def _http_executor(settings: Settings) -> "Runnable":
    from services.http_executor.main import HttpExecutorService

    return HttpExecutorService(settings)


def _code_executor(settings: Settings) -> "Runnable":
    from services.code_executor.main import CodeExecutorService

    return CodeExecutorService(settings)


def _result_injector(settings: Settings) -> "Runnable":
    from services.result_injector.main import ResultInjectorService

    return ResultInjectorService(settings)


def _billing(settings: Settings) -> "Runnable":
    from services.billing.main import BillingService

    return BillingService(settings)


# Imports are deferred so a process loads only the service it runs.
SERVICES: dict[str, Callable[[Settings], "Runnable"]] = {
    "registry": _registry,
    "dispatcher": _dispatcher,
    "http-executor": _http_executor,
    "code-executor": _code_executor,
    "result-injector": _result_injector,
    "billing": _billing,
}

# Packages our dependencies import whether they are used or not, which a service never
# uses: nats-py imports aiohttp for websocket connections, FastStream imports uvicorn to
# serve ASGI. About 10 MB of memory in every process that loads them, for nothing.
NOT_LOADED: dict[str, tuple[str, ...]] = {
    "registry": ("aiohttp",),
    "dispatcher": ("aiohttp", "uvicorn"),
    "http-executor": ("uvicorn",),  # aiohttp sends its requests
    "code-executor": ("uvicorn",),  # aiohttp is its sandboxes' egress proxy
    "result-injector": ("aiohttp", "uvicorn"),
    "billing": ("aiohttp",),
}
WEBSOCKET_SCHEMES = ("ws://", "wss://")


def keep_out(service: str, nats_url: str | None) -> None:
    """Before anything imports them: make the packages ``service`` never uses unimportable
    in this process. Their importers treat them as optional (an ImportError), unless NATS
    is reached over websockets, which needs aiohttp."""
    websockets = any(url.startswith(WEBSOCKET_SCHEMES) for url in servers(nats_url or ""))
    for package in NOT_LOADED[service]:
        if package == "aiohttp" and websockets:
            continue
        sys.modules.setdefault(package, None)  # type: ignore[arg-type]
