"""Role passwords in nats-server's environment, ``$MIDCALL_NATS_PASSWORD_<ROLE>``.

nats-server parses such a value as config, so a password shaped like a date or a
number stops it from starting (measured on 2.15.1, below). Midcall generates passwords
of one shape, a letter then letters and digits, and refuses any other meant for the
environment (``midcall nats-config``, compose's nats entrypoint) before nats-server
reads it. Passwords it writes into a config itself are quoted, so any shape works there.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nats
import nats.errors
import pytest

from services.cli import main
from shared.fabric.nats_server import NatsServer
from shared.security.data_dir import write_private
from shared.security.nats_auth import (
    CREDENTIALS_FILE,
    ENV_PASSWORD_EXAMPLE,
    PASSWORD_LENGTH,
    Role,
    UnreadablePassword,
    check_env_passwords,
    connect_options,
    env_password_problem,
    generate_password,
    load_or_create_credentials,
    password_env,
    render_authorization,
    render_authorization_from_env,
)

ROOT = Path(__file__).resolve().parent.parent
CHECK_SCRIPT = ROOT / "infra" / "check-nats-passwords.sh"
RUNTIME_ENV = password_env(Role.RUNTIME)

# Shapes nats-server would not read as themselves from its environment: refused first.
MISREAD = [
    pytest.param("2024-01-02T03:04:05", id="datetime"),
    pytest.param("2024-01-02", id="date"),
    pytest.param("1234567890123456", id="integer"),
    pytest.param("1.5", id="float"),
    pytest.param("1e5", id="exponent"),
    pytest.param("true", id="boolean"),
    pytest.param("ab+/cd==ab+/cd==", id="base64"),
    pytest.param("-bcdefghijklmnop", id="leading-dash"),
    pytest.param("abcdefgh ijklmnop", id="space"),
    pytest.param("abcdefgh;ijklmnop", id="semicolon"),
    pytest.param("$HOME", id="variable"),
    pytest.param("Abcdefghij123456\n", id="newline"),
    pytest.param("Abcdéfghij123456", id="non-ascii"),
    pytest.param("Abcdefghij12345", id="too-short"),
    pytest.param("", id="empty"),
]
# In the rule: read as themselves, whatever the letters and digits after the first spell.
READ_AS_WRITTEN = [
    pytest.param("p" + "0123456789abcdef" * 4, id="hex-after-a-letter"),
    pytest.param("T20240102T030405Z", id="date-digits-after-a-letter"),
    pytest.param("e1234567890123456", id="number-after-a-letter"),
    pytest.param("trueYesOnOffNo000", id="booleans-inside"),
]


def env_server(tmp_path: Path) -> NatsServer:
    """A nats-server whose runtime user's password is ``$MIDCALL_NATS_PASSWORD_RUNTIME``."""
    authorization = render_authorization_from_env([Role.RUNTIME])
    return NatsServer(tmp_path / "nats", authorization=authorization)


def refusal(variable: str) -> str:
    return (
        f"{variable}: nats-server would not read this password as it is from its environment; "
        "use 16 or more letters and digits (A-Z, a-z, 0-9), the first a letter "
        "(make one with `echo p$(openssl rand -hex 32)`)"
    )


# --- the rule --------------------------------------------------------------------------


@pytest.mark.parametrize("password", MISREAD)
def test_a_password_nats_server_would_misread_is_refused_naming_its_variable(
    password: str,
) -> None:
    environ = {RUNTIME_ENV: password, password_env(Role.OPS): "p" + "0" * 64}

    with pytest.raises(UnreadablePassword) as refused:
        check_env_passwords(environ)

    assert str(refused.value) == refusal(RUNTIME_ENV)


def test_every_password_outside_the_rule_is_named_and_unset_ones_are_not_checked() -> None:
    setup = password_env(Role.SETUP)
    environ = {setup: "2024-01-02", RUNTIME_ENV: "12345", "MIDCALL_OTHER": "1"}

    with pytest.raises(UnreadablePassword) as refused:
        check_env_passwords(environ)

    assert str(refused.value) == f"{refusal(setup)}\n{refusal(RUNTIME_ENV)}"
    check_env_passwords({})  # none set yet: nothing to refuse


def test_generated_passwords_keep_to_the_rule() -> None:
    passwords = {generate_password() for _ in range(2000)}

    assert len(passwords) == 2000
    assert {len(p) for p in passwords} == {PASSWORD_LENGTH}
    assert all(env_password_problem(RUNTIME_ENV, p) is None for p in passwords)


def test_new_credentials_keep_to_the_rule_and_stored_ones_are_kept(tmp_path: Path) -> None:
    # An earlier version's secrets.token_urlsafe password, as a runtime was configured with.
    write_private(tmp_path / CREDENTIALS_FILE, json.dumps({"runtime": "12-ab_cd"}))

    credentials = load_or_create_credentials(tmp_path)

    assert credentials[Role.RUNTIME] == "12-ab_cd"
    check_env_passwords({password_env(r): p for r, p in credentials.items() if r != Role.RUNTIME})


def test_the_readme_makes_a_valid_password_for_every_role(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    compose = (ROOT / "README.md").read_text().split("## Compose", 1)[1]
    recipe = re.search(r"```sh\n(.*?)```", compose, re.DOTALL)
    assert recipe is not None

    subprocess.run(["sh", "-c", recipe[1]], cwd=tmp_path, check=True)

    lines = (tmp_path / ".env").read_text().splitlines()
    environ = dict(line.split("=", 1) for line in lines)
    assert set(environ) == {password_env(role) for role in Role}
    check_env_passwords(environ)
    assert ENV_PASSWORD_EXAMPLE in (ROOT / "compose.yaml").read_text()


# --- where it is enforced --------------------------------------------------------------


def test_midcall_nats_config_refuses_a_password_it_would_misread(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(RUNTIME_ENV, "2024-01-02T03:04:05")
    assert main(["nats-config"]) == 2
    assert capsys.readouterr() == ("", refusal(RUNTIME_ENV) + "\n")

    monkeypatch.setenv(RUNTIME_ENV, "p" + "0123456789abcdef" * 4)
    assert main(["nats-config"]) == 0
    assert capsys.readouterr() == (render_authorization_from_env(), "")


@pytest.mark.parametrize("password", MISREAD + READ_AS_WRITTEN)
def test_composes_nats_entrypoint_refuses_exactly_what_midcall_does(password: str) -> None:
    # Given the compose entrypoint, under a POSIX shell like the nats image's
    environ = {"PATH": os.environ["PATH"], RUNTIME_ENV: password}

    run = subprocess.run(
        ["sh", str(CHECK_SCRIPT), "echo", "nats-server started"],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )

    problem = env_password_problem(RUNTIME_ENV, password)
    if problem is None:
        assert (run.returncode, run.stdout, run.stderr) == (0, "nats-server started\n", "")
    else:
        assert (run.returncode, run.stdout, run.stderr) == (2, "", problem + "\n")


# --- nats-server itself ----------------------------------------------------------------


@pytest.mark.parametrize("password", READ_AS_WRITTEN)
async def test_a_password_in_the_rule_comes_from_the_servers_environment_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv(RUNTIME_ENV, password)  # nats-server inherits it
    check_env_passwords(os.environ)
    server = env_server(tmp_path)
    url = server.start()
    try:
        client = await nats.connect(url, **connect_options(Role.RUNTIME, password))
        await client.close()
        wrong = connect_options(Role.RUNTIME, password[:-1])
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(url, **wrong, allow_reconnect=False)
    finally:
        await server.astop()


@pytest.mark.parametrize(
    ("password", "logged"),
    [
        ("2024-01-02T03:04:05", "Expected 'Z' in ISO8601 datetime"),
        ("2024-01-02", "Expected 'T' in ISO8601 datetime"),
        ("12345", "interface {} is int64, not string"),
        ("1.5", "interface {} is float64, not string"),
        ("true", "interface {} is bool, not string"),
    ],
)
async def test_why_the_rule_nats_server_does_not_start_with_such_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str, logged: str
) -> None:
    """Were a nats-server upgrade to read these as strings, the rule could be relaxed."""
    monkeypatch.setenv(RUNTIME_ENV, password)
    server = env_server(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="nats-server exited"):
            server.start()
    finally:
        await server.astop()
    assert logged in (tmp_path / "nats" / "nats-server.log").read_text()


async def test_the_embedded_server_reads_stored_passwords_of_any_shape(tmp_path: Path) -> None:
    """`midcall up` quotes each password in its own config, so those stored by earlier
    versions (secrets.token_urlsafe: some shaped like a date or a number) keep working."""
    odd = {
        Role.RUNTIME: "2024-01-02T03:04:05",
        Role.OPS: "12345",
        Role.SETUP: "true",
        Role.BILLING: "ab+/cd== $HOME;},'\\\"",
    }
    write_private(tmp_path / CREDENTIALS_FILE, json.dumps({r.value: p for r, p in odd.items()}))
    credentials = load_or_create_credentials(tmp_path)
    assert {role: credentials[role] for role in odd} == odd

    server = NatsServer(tmp_path / "nats", authorization=render_authorization(credentials))
    url = server.start()
    try:
        for role, password in credentials.items():
            client = await nats.connect(url, **connect_options(role, password))
            await client.close()
    finally:
        await server.astop()
