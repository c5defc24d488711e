"""The services ``midcall`` can run, by name: the one list of them."""

from collections.abc import Callable

from shared.process.service import Runnable
from shared.settings import Settings


def _registry(settings: Settings) -> Runnable:
    from services.registry.main import RegistryService

    return RegistryService(settings)


def _dispatcher(settings: Settings) -> Runnable:
    from services.dispatcher.main import DispatcherService

    return DispatcherService(settings)


def _http_executor(settings: Settings) -> Runnable:
    from services.http_executor.main import HttpExecutorService

    return HttpExecutorService(settings)


def _code_executor(settings: Settings) -> Runnable:
    from services.code_executor.main import CodeExecutorService

    return CodeExecutorService(settings)


def _result_injector(settings: Settings) -> Runnable:
    from services.result_injector.main import ResultInjectorService

    return ResultInjectorService(settings)


def _billing(settings: Settings) -> Runnable:
    from services.billing.main import BillingService

    return BillingService(settings)


# Imports are deferred so a process loads only the service it runs.
SERVICES: dict[str, Callable[[Settings], Runnable]] = {
    "registry": _registry,
    "dispatcher": _dispatcher,
    "http-executor": _http_executor,
    "code-executor": _code_executor,
    "result-injector": _result_injector,
    "billing": _billing,
}
