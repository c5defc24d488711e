"""``midcall up``: real processes, started and stopped the way an operator does it."""

import asyncio
import contextlib
import os
import signal
import sqlite3
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.fabric.nats_server import free_port
from shared.security.api_keys import bearer
from shared.security.data_dir import PRIVATE_DIR, PRIVATE_FILE

# The umask most machines have: nothing up writes is private by its grace.
OPEN_UMASK = 0o022


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


LAUNCHED: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def no_leftovers() -> AsyncIterator[None]:
    """Whatever a failing test leaves running is stopped, as an operator would."""
    yield
    while LAUNCHED:
        process = LAUNCHED.pop()
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)


async def start_up(
    tmp_path: Path, printed: list[str] | None = None, **env: str
) -> tuple[asyncio.subprocess.Process, str, int]:
    """``midcall up`` until it says it is up; what it printed before goes to ``printed``."""
    registry = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "up",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        umask=OPEN_UMASK,
        env={
            **os.environ,
            "MIDCALL_DATA_DIR": str(tmp_path / "data"),
            "MIDCALL_REGISTRY_PORT": str(registry),
            "MIDCALL_BILLING_PORT": str(free_port()),
            "MIDCALL_LOG_LEVEL": "WARNING",
            **env,
        },
    )
    LAUNCHED.append(process)
    assert process.stdout is not None
    while not (line := (await asyncio.wait_for(process.stdout.readline(), 60)).decode()).startswith(
        "Midcall is up"
    ):
        assert line, "midcall up ended before it was up"
        if printed is not None:
            printed.append(line)
    return process, line, registry


async def test_up_serves_then_stops_everything_on_sigterm(tmp_path: Path) -> None:
    process, _, registry = await start_up(tmp_path)
    spawned = children(process.pid)
    async with httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{registry}/healthz")

    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), 60)

    assert health.status_code == 200
    assert len(spawned) == 7  # nats-server and six services
    assert code == 0
    assert [pid for pid in spawned if alive(pid)] == []
    assert (tmp_path / "data" / "jetstream").is_dir()
    assert (tmp_path / "data" / "midcall.db").is_file()


async def test_up_uses_a_given_nats_server_instead_of_its_own(
    tmp_path: Path, nats_url: str
) -> None:
    process, line, _ = await start_up(tmp_path, MIDCALL_NATS_URL=nats_url)
    spawned = children(process.pid)

    process.send_signal(signal.SIGINT)
    code = await asyncio.wait_for(process.wait(), 60)

    assert f"NATS {nats_url}" in line
    assert len(spawned) == 6
    assert code == 0
    assert not (tmp_path / "data" / "jetstream").exists()


async def test_ctrl_c_to_the_whole_process_group_drains_before_nats_stops(
    tmp_path: Path,
) -> None:
    process, _, _ = await start_up(tmp_path, MIDCALL_LOG_LEVEL="INFO")

    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 0
    log = stderr.decode()
    assert log.count("stopping") == 6
    assert "Traceback" not in log
    assert "Connection broken" not in log


async def test_the_first_up_prints_the_admin_key_once_and_it_opens_the_rest_api(
    tmp_path: Path,
) -> None:
    first: list[str] = []
    process, _, registry = await start_up(tmp_path, first)
    key = first[1].strip()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{registry}") as http:
        with_key = await http.get("/v1/accounts", headers={"Authorization": f"Bearer {key}"})
        without = await http.get("/v1/accounts")
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 60)
    again: list[str] = []
    process, _, _ = await start_up(tmp_path, again)
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 60)

    assert first[0].startswith("REST admin key (shown this once; kept in ")
    assert key.startswith("mck_admin_")
    assert (tmp_path / "data" / "admin.key").read_text().strip() == key
    assert oct((tmp_path / "data" / "admin.key").stat().st_mode & 0o777) == "0o600"
    assert (with_key.status_code, without.status_code) == (200, 401)
    assert [line for line in again if "admin key" in line] == []
    assert again[0].startswith("NATS for voice runtimes: user 'runtime'")


def not_private(root: Path) -> list[str]:
    """What under ``root`` is more than its owner's: not a 0700 directory or a 0600 file."""
    found = []
    for path in [root, *root.rglob("*")]:
        with contextlib.suppress(FileNotFoundError):  # nats-server's temporary files come and go
            mode = path.lstat().st_mode
            if stat.S_IMODE(mode) != (PRIVATE_DIR if stat.S_ISDIR(mode) else PRIVATE_FILE):
                found.append(f"{path.relative_to(root)} {oct(stat.S_IMODE(mode))}")
    return found


async def test_everything_up_keeps_is_its_owners_only_even_in_an_older_open_data_dir(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    with contextlib.closing(sqlite3.connect(data / "midcall.db")) as older:  # 0644, as it was
        older.execute("CREATE TABLE kept (x)")
    printed: list[str] = []
    process, _, registry = await start_up(tmp_path, printed)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{registry}", headers=bearer(printed[1].strip())
    ) as http:
        made = await http.post("/v1/accounts", json={"account_id": "acme"})
    running = sorted(p.name for p in data.iterdir())
    open_while_running = not_private(data)
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 60)

    assert made.status_code == 201, made.text
    assert {"jetstream", "midcall.db", "midcall.db-wal", "midcall.db-shm"} <= set(running)
    assert open_while_running == []
    assert not_private(data) == []
