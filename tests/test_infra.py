"""The committed deployment files say what the code generates."""

from pathlib import Path

from shared.nats_auth import render_authorization_from_env

ROOT = Path(__file__).resolve().parent.parent


def test_the_infra_nats_config_has_the_generated_users_and_permissions() -> None:
    config = (ROOT / "infra" / "nats-server.conf").read_text()

    # Regenerate with: midcall nats-config (and paste it in place of the old block).
    assert config.endswith(render_authorization_from_env())


def test_compose_signs_each_service_in_as_its_own_role() -> None:
    compose = (ROOT / "compose.yaml").read_text()

    for role, variable in [
        ("setup", "SETUP"),
        ("registry", "REGISTRY"),
        ("dispatcher", "DISPATCHER"),
        ("http-executor", "HTTP_EXECUTOR"),
        ("result-injector", "RESULT_INJECTOR"),
        ("billing", "BILLING"),
    ]:
        assert f"MIDCALL_NATS_USER: {role}\n" in compose
        assert f"MIDCALL_NATS_PASSWORD: ${{MIDCALL_NATS_PASSWORD_{variable}:?" in compose
    assert '"8222:8222"' not in compose


def test_compose_checks_the_nats_passwords_before_nats_server_starts() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    nats = compose.split("\n  nats:\n", 1)[1].split("\n\n", 1)[0]

    # tests/test_nats_passwords.py holds the script to shared.nats_auth's rule.
    assert 'entrypoint: ["/bin/sh", "/etc/nats/check-nats-passwords.sh"]' in nats
    assert 'command: ["nats-server", "-c", "/etc/nats/nats-server.conf"]' in nats
    assert "./infra/check-nats-passwords.sh:/etc/nats/check-nats-passwords.sh:ro" in nats
