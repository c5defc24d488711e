"""The committed deployment files say what the code generates."""

import os
import subprocess
from pathlib import Path

from shared.security.nats_auth import render_authorization_from_env

ROOT = Path(__file__).resolve().parent.parent
# Where compose's nats container finds the runtime credentials' accounts (a volume the
# runtime-accounts container writes).
COMPOSE_ACCOUNTS = "accounts/runtime-accounts.conf"


def test_the_infra_nats_config_has_the_generated_users_and_permissions() -> None:
    config = (ROOT / "infra" / "nats-server.conf").read_text()

    # Regenerate with: midcall nats-config --runtime-accounts accounts/runtime-accounts.conf
    # (and paste it in place of the old block).
    assert config.endswith(render_authorization_from_env(include=COMPOSE_ACCOUNTS))


def test_compose_signs_each_service_in_as_its_own_role() -> None:
    compose = (ROOT / "compose.yaml").read_text()

    for role, variable in [
        ("setup", "SETUP"),
        ("registry", "REGISTRY"),
        ("dispatcher", "DISPATCHER"),
        ("http-executor", "HTTP_EXECUTOR"),
        ("code-executor", "CODE_EXECUTOR"),
        ("result-injector", "RESULT_INJECTOR"),
        ("billing", "BILLING"),
    ]:
        assert f"MIDCALL_NATS_USER: {role}\n" in compose
        assert f"MIDCALL_NATS_PASSWORD: ${{MIDCALL_NATS_PASSWORD_{variable}:?" in compose
    assert '"8222:8222"' not in compose


def test_compose_checks_the_nats_passwords_before_nats_server_starts() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    nats = compose.split("\n  nats:\n", 1)[1].split("\n\n", 1)[0]

    # tests/test_nats_passwords.py holds the script to shared.security.nats_auth's rule.
    assert 'entrypoint: ["/bin/sh", "/etc/nats/check-nats-passwords.sh"]' in nats
    prepared = '["/bin/sh", "/etc/nats/prepare-runtime-accounts.sh", "nats-server", "-c", '
    assert prepared + '"/etc/nats/nats-server.conf"]' in nats
    assert "./infra/check-nats-passwords.sh:/etc/nats/check-nats-passwords.sh:ro" in nats


def test_compose_runs_runtime_accounts_beside_nats_on_a_shared_volume() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    nats = compose.split("\n  nats:\n", 1)[1].split("\n\n", 1)[0]
    sidecar = compose.split("\n  runtime-accounts:\n", 1)[1].split("\n\n", 1)[0]

    assert "- nats-accounts:/etc/nats/accounts" in nats
    assert "- nats-accounts:/etc/nats/accounts" in sidecar
    assert f'command: ["runtime-accounts", "/etc/nats/{COMPOSE_ACCOUNTS}"]' in sidecar
    assert "MIDCALL_NATS_USER: setup\n" in sidecar
    assert "MIDCALL_NATS_PASSWORD_RELOAD: ${MIDCALL_NATS_PASSWORD_RELOAD:?}" in sidecar


def test_the_nats_container_makes_an_empty_accounts_file_the_sidecar_may_write(
    tmp_path: Path,
) -> None:
    script = ROOT / "infra" / "prepare-runtime-accounts.sh"
    env = {"PATH": os.environ["PATH"], "MIDCALL_NATS_ACCOUNTS_DIR": str(tmp_path)}

    ran = subprocess.run(["sh", str(script), "echo", "started"], env=env, capture_output=True)

    made = tmp_path / "runtime-accounts.conf"
    assert (ran.returncode, ran.stdout) == (0, b"started\n")
    assert made.read_text() == ""
    assert (made.stat().st_uid, tmp_path.stat().st_uid) == (65534, 65534)
