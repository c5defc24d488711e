"""A code-executor that is not root runs each jail in a user namespace instead of a uid of its own.

The suite runs as root, where each jail gets a uid from
``MIDCALL_SANDBOX_UID_BASE``; these tests start the jail the way a code-executor
without root does (``Uids(None)``), so that mode's command line is run for real.
What they cannot show from root is the process limit: the kernel does not apply
``RLIMIT_NPROC`` to processes whose uid outside the namespace is root, which an
executor without root never maps to.
"""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.code_executor.jail import Jail
from services.code_executor.workers import Call, Pool, Uids
from shared.settings import Settings

FUNCTION = '''
async def tool(ctx: RunContext, city: str) -> dict:
    """Answers with what it was given, and who it runs as."""
    os = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "_wrap_close"][0]
    os = os.__init__.__globals__["sys"].modules["os"]
    return {"status": "success", "city": city, "uid": os.getuid(), "pid": os.getpid()}
'''


async def no_egress(request: dict[str, Any], body: bytes) -> Any:
    raise AssertionError("the function made no request")


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    settings = Settings()
    running = Pool(Jail.from_settings(settings), Uids(None), calls_per_account=4, idle_s=60)
    yield running
    await running.close()


async def test_calls_run_in_a_user_namespace_as_nobody_each_in_a_process_of_its_own(
    pool: Pool,
) -> None:
    job = {
        "code": FUNCTION,
        "function": "tool",
        "arguments": {"city": "Pune"},
        "ctx": {"call_id": "c1", "conversation_id": "v1", "agent_id": "a1"},
    }

    answers = [
        await pool.run("acme", job, Call(no_egress, lambda *_: None, timeout_s=5.0))
        for _ in range(3)
    ]

    pids = [answer["result"].pop("pid") for answer in answers]
    assert answers == [{"result": {"status": "success", "city": "Pune", "uid": 65534}}] * 3
    assert len(set(pids)) == 3
    assert 1 not in pids  # the zygote is the namespace's first process
