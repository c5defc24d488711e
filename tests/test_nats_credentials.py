"""An external server in operator mode: services sign in with a ``.creds`` file
(``MIDCALL_NATS_CREDENTIALS``), as NGS or a server run with nsc's accounts asks."""

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.errors
import nkeys
import pytest
from pydantic import ValidationError

from shared.contract import subjects
from shared.fabric.broker import build_broker, connect, create_streams
from shared.fabric.nats_server import NatsServer
from shared.security.data_dir import write_private
from shared.security.nats_auth import Role
from shared.settings import Settings
from tests.support.nats_jwt import Identity, Operator


@pytest.fixture
async def operator_mode(tmp_path: Path) -> AsyncIterator[tuple[str, Operator]]:
    operator = Operator.new()
    server = NatsServer(tmp_path / "nats", authorization=operator.server_config())
    url = server.start()
    try:
        yield url, operator
    finally:
        await server.astop()


def creds_file(path: Path, text: str) -> Path:
    write_private(path, text)
    return path


async def test_setup_and_services_sign_in_with_a_credentials_file(
    operator_mode: tuple[str, Operator], tmp_path: Path
) -> None:
    url, operator = operator_mode
    path = creds_file(tmp_path / "midcall.creds", operator.credentials("midcall"))
    settings = Settings(nats_url=url, nats_credentials=path)
    await create_streams(settings)  # `midcall setup`
    broker = build_broker(settings, Role.DISPATCHER.value)
    try:
        client, js = await connect(broker, settings)
        ack = await js.publish(subjects.calls("c1"), b"{}")
        assert ack.stream == subjects.CALLS_STREAM
        # Signed in, a service reads its replies under its role's own inbox prefix.
        assert client.new_inbox().startswith("_INBOX_dispatcher.")
    finally:
        await broker.stop()


async def test_a_user_the_operator_did_not_issue_is_refused(
    operator_mode: tuple[str, Operator], tmp_path: Path
) -> None:
    url, operator = operator_mode
    impostor = Identity.new(nkeys.PREFIX_BYTE_ACCOUNT)
    path = creds_file(tmp_path / "rogue.creds", operator.credentials("rogue", issuer=impostor))
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(url, user_credentials=str(path), allow_reconnect=False)
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(url, allow_reconnect=False)  # nor anyone anonymous


def test_a_credentials_file_must_exist_and_excludes_a_user(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not point to a file"):
        Settings(nats_credentials=tmp_path / "missing.creds")
    path = creds_file(tmp_path / "midcall.creds", "")
    with pytest.raises(ValidationError, match="not both"):
        Settings(nats_credentials=path, nats_user="dispatcher")
