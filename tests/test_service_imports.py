"""What a service process loads: only what the service it runs uses (memory is paid per process).

Each case imports the ``midcall`` command and one service, as ``midcall run <service>`` does,
in a fresh interpreter.
"""

import json
import subprocess
import sys

import pytest

# Heavy packages and the services that use them: FastAPI and SQLAlchemy serve the REST APIs.
REST_ONLY = ("fastapi", "sqlalchemy", "sqlmodel")


def loaded(service_module: str) -> set[str]:
    probe = (
        "import json, sys, services.cli, importlib;"
        f"importlib.import_module({service_module!r});"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    "service",
    ["dispatcher", "http_executor", "code_executor", "result_injector"],
)
def test_a_service_without_a_rest_api_loads_no_web_framework_or_orm(service: str) -> None:
    modules = loaded(f"services.{service}.main")

    assert modules.isdisjoint(REST_ONLY), sorted(modules & set(REST_ONLY))
