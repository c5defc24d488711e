"""The framework examples' demo modes, run as a newcomer runs them: `midcall up` in the
directory, then `python examples/<framework>_agent.py --demo`, no LLM, microphone or
network. Each places one call of the salon's Python tool through its adapter."""

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from services.supervisor import Fabric
from shared.fabric.nats_server import free_port
from shared.settings import Settings
from tests.support.processes import up

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Fabric, Path]]:
    where = tmp_path_factory.mktemp("examples")
    registry = free_port()
    fabric = up(Settings(data_dir=where / ".midcall"), registry)
    await fabric.start()
    yield fabric, where
    await fabric.stop()


async def demo(example: str, where: Path, registry: str) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / example),
        "--demo",
        cwd=where,
        env={**os.environ, "MIDCALL_REGISTRY_PORT": registry, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()[-3000:]
    return out.decode().splitlines()


ANSWER = {"status": "success", "day": "Tuesday", "hours": "9:00 to 18:00"}


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        (
            "pipecat_agent.py",
            [
                "the bot says: Let me check the opening hours.",
                f"the LLM reads: {ANSWER} (run_llm=True)",
            ],
        ),
        (
            "livekit_agent.py",
            [
                "the agent says: Let me check the opening hours.",
                f"the LLM reads: {json.dumps(ANSWER)}",
            ],
        ),
    ],
)
async def test_a_demo_says_the_filler_then_hands_the_llm_the_answer(
    running: tuple[Fabric, Path], example: str, expected: list[str]
) -> None:
    fabric, where = running

    printed = await demo(example, where, fabric.extra_env["MIDCALL_REGISTRY_PORT"])

    assert printed == expected
