"""What a service process loads: only what the service it runs uses (memory is paid per process).

Each case imports the ``midcall`` command and one service, as ``midcall run <service>`` does
(``keep_out`` first), in a fresh interpreter.
"""

import json
import subprocess
import sys

import pytest

from services.catalog import NOT_LOADED, SERVICES

# Heavy packages and the services that use them: FastAPI and SQLAlchemy serve the REST APIs.
REST_ONLY = ("fastapi", "sqlalchemy", "sqlmodel")
MODULES = {
    "registry": "services.registry.main",
    "dispatcher": "services.dispatcher.main",
    "http-executor": "services.http_executor.main",
    "code-executor": "services.code_executor.main",
    "result-injector": "services.result_injector.main",
    "billing": "services.billing.main",
}


def loaded(service: str, nats_url: str = "nats://127.0.0.1:4222") -> set[str]:
    probe = (
        "import json, sys, importlib, services.cli;"
        f"services.cli.keep_out({service!r}, {nats_url!r});"
        f"importlib.import_module({MODULES[service]!r});"
        "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    "service", ["dispatcher", "http-executor", "code-executor", "result-injector"]
)
def test_a_service_without_a_rest_api_loads_no_web_framework_or_orm(service: str) -> None:
    modules = loaded(service)

    assert modules.isdisjoint(REST_ONLY), sorted(modules & set(REST_ONLY))


@pytest.mark.parametrize("service", sorted(MODULES))
def test_a_service_loads_none_of_the_packages_it_never_uses(service: str) -> None:
    modules = loaded(service)

    assert modules.isdisjoint(NOT_LOADED[service]), sorted(modules & set(NOT_LOADED[service]))


def test_nats_over_websockets_keeps_aiohttp_which_it_needs() -> None:
    modules = loaded("dispatcher", "nats://127.0.0.1:4222,wss://nats.example:443")

    assert "aiohttp" in modules
    assert "uvicorn" not in modules


def test_every_service_says_what_it_keeps_out() -> None:
    assert set(NOT_LOADED) == set(SERVICES) == set(MODULES)
