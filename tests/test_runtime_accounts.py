"""What runtime credentials become in nats-server's configuration
(shared.security.runtime_accounts)."""

import asyncio
import contextlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from shared.contract import subjects
from shared.fabric import jetstream
from shared.fabric.nats_server import NatsServer
from shared.security.nats_auth import (
    Role,
    connect_options,
    generate_password,
    password_env,
    render_authorization_from_env,
)
from shared.security.runtime_accounts import (
    RuntimeCredential,
    accounts_in,
    digest,
    ensure_file,
    permissions,
    render,
)
from tests.test_infra import COMPOSE_ACCOUNTS

T0 = datetime(2026, 12, 4, tzinfo=UTC)


def credential(credential_id: str, account_id: str) -> RuntimeCredential:
    return RuntimeCredential(
        credential_id=credential_id,
        account_id=account_id,
        password_digest=f"$2b$11${credential_id}",
        created_at=T0,
    )


def test_an_accounts_runtimes_import_its_own_subjects_mapped_to_the_public_ones() -> None:
    text = render([credential("c2", "acme"), credential("c1", "acme")])

    assert text == "\n".join(
        [
            '"RUNTIMES_acme" {',
            "  users = [",
            "    {",
            '      user: "runtime-c1"',
            '      password: "$2b$11$c1"',
            "      permissions: {",
            '        publish: { allow: ["midcall.calls.*", "midcall.conv.*.ended", '
            '"midcall.conv.*.cancel", "midcall.conv.*.stored"] }',
            '        subscribe: { allow: ["midcall.conv.>", "_INBOX_runtime-c1.>"] }',
            "      }",
            "    }",
            "    {",
            '      user: "runtime-c2"',
            '      password: "$2b$11$c2"',
            "      permissions: {",
            '        publish: { allow: ["midcall.calls.*", "midcall.conv.*.ended", '
            '"midcall.conv.*.cancel", "midcall.conv.*.stored"] }',
            '        subscribe: { allow: ["midcall.conv.>", "_INBOX_runtime-c2.>"] }',
            "      }",
            "    }",
            "  ]",
            "  imports = [",
            '    { service: { account: MIDCALL, subject: "midcall.calls.acme.*" }, '
            'to: "midcall.calls.*" }',
            '    { service: { account: MIDCALL, subject: "midcall.conv.acme.*.ended" }, '
            'to: "midcall.conv.*.ended" }',
            '    { service: { account: MIDCALL, subject: "midcall.conv.acme.*.cancel" }, '
            'to: "midcall.conv.*.cancel" }',
            '    { stream: { account: MIDCALL, subject: "midcall.conv.acme.*.pending" }, '
            'to: "midcall.conv.*.pending" }',
            '    { stream: { account: MIDCALL, subject: "midcall.conv.acme.*.result" }, '
            'to: "midcall.conv.*.result" }',
            '    { stream: { account: MIDCALL, subject: "midcall.conv.acme.*.progress" }, '
            'to: "midcall.conv.*.progress" }',
            '    { service: { account: MIDCALL, subject: "midcall.conv.acme.*.stored" }, '
            'to: "midcall.conv.*.stored" }',
            "  ]",
            "}",
            "",
        ]
    )


def test_each_credential_reads_its_own_inbox_only() -> None:
    assert permissions("c1").subscribe == ("midcall.conv.>", "_INBOX_runtime-c1.>")


def test_a_new_account_can_be_rendered_before_its_users_and_is_read_back() -> None:
    credentials = [credential("c1", "acme"), credential("c2", "globex-2=")]

    held = render(credentials, without_users={"globex-2="})

    assert accounts_in(held) == {"acme", "globex-2="}
    assert "runtime-c1" in held
    assert "runtime-c2" not in held
    assert accounts_in(render([])) == set()


# --- beside a nats-server of your own (compose, a cluster node) -----------------------------


async def test_midcall_runtime_accounts_keeps_a_server_of_your_own_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As compose runs it: passwords from the server's environment, the accounts file
    # included from a directory the nats container prepared.
    passwords = {role: generate_password() for role in Role}
    for role, password in passwords.items():
        monkeypatch.setenv(password_env(role), password)
    ensure_file(tmp_path / "nats" / COMPOSE_ACCOUNTS)
    authorization = render_authorization_from_env(include=COMPOSE_ACCOUNTS)
    server = NatsServer(tmp_path / "nats", authorization=authorization)
    url = server.start()
    password = generate_password()
    stored = RuntimeCredential(
        credential_id="c1", account_id="acme", password_digest=digest(password), created_at=T0
    )
    # Started with its server, before `midcall setup` made the bucket: it waits for it.
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "runtime-accounts",
        str(tmp_path / "nats" / COMPOSE_ACCOUNTS),
        env={
            **os.environ,
            "MIDCALL_NATS_URL": url,
            "MIDCALL_NATS_USER": "setup",
            "MIDCALL_NATS_PASSWORD": passwords[Role.SETUP],
        },
        stderr=asyncio.subprocess.PIPE,
    )
    setup = await nats.connect(url, **connect_options(Role.SETUP, passwords[Role.SETUP]))
    registry = await nats.connect(url, **connect_options(Role.REGISTRY, passwords[Role.REGISTRY]))
    try:
        assert follower.stderr is not None
        waiting = await asyncio.wait_for(follower.stderr.readline(), 10)
        assert b"waiting for NATS and the credentials bucket" in waiting
        await jetstream.ensure(setup.jetstream())
        bucket = await registry.jetstream().key_value(subjects.RUNTIME_CREDENTIALS_BUCKET)
        await bucket.put("c1", stored.model_dump_json().encode())
        closed = asyncio.Event()
        runtime = await signed_in(url, password, closed)

        ack = await runtime.jetstream().publish("midcall.calls.conv-1", b"{}")
        await bucket.delete("c1")
        await asyncio.wait_for(closed.wait(), 10)

        assert ack.stream == subjects.CALLS_STREAM
    finally:
        follower.terminate()
        await asyncio.wait_for(follower.wait(), 10)
        await setup.close()
        await registry.close()
        await server.astop()
    assert follower.returncode == 0


async def signed_in(url: str, password: str, closed: asyncio.Event) -> Client:
    """acme's runtime, once its credential is live (the accounts reloaded, twice)."""
    options = {"user": "runtime-c1", "password": password, "inbox_prefix": "_INBOX_runtime-c1"}
    await live(url, options)

    async def on_closed() -> None:
        closed.set()

    return await nats.connect(url, allow_reconnect=False, closed_cb=on_closed, **options)


async def live(url: str, options: dict[str, str]) -> None:
    """Once a new credential can place calls (its account reloaded into nats-server)."""
    async with asyncio.timeout(10):
        while True:
            if await reaches_the_fabric(url, options):
                return
            await asyncio.sleep(0.05)


async def reaches_the_fabric(url: str, options: dict[str, str]) -> bool:
    with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
        client = await nats.connect(url, allow_reconnect=False, connect_timeout=1, **options)
        try:
            # An end of a conversation of no one's: through the service import, stored.
            probe = b'{"conversation_id": "probe"}'
            await client.jetstream().publish("midcall.conv.probe.ended", probe, timeout=1)
            return True
        finally:
            await client.close()
    return False
