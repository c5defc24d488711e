"""What runtime credentials become in nats-server's configuration (shared.runtime_accounts)."""

from datetime import UTC, datetime

from shared.runtime_accounts import RuntimeCredential, accounts_in, permissions, render

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
            '        publish: { allow: ["midcall.calls.*", "midcall.conv.*.ended"] }',
            '        subscribe: { allow: ["midcall.conv.>", "_INBOX_runtime-c1.>"] }',
            "      }",
            "    }",
            "    {",
            '      user: "runtime-c2"',
            '      password: "$2b$11$c2"',
            "      permissions: {",
            '        publish: { allow: ["midcall.calls.*", "midcall.conv.*.ended"] }',
            '        subscribe: { allow: ["midcall.conv.>", "_INBOX_runtime-c2.>"] }',
            "      }",
            "    }",
            "  ]",
            "  imports = [",
            '    { service: { account: MIDCALL, subject: "midcall.calls.acme.*" }, '
            'to: "midcall.calls.*" }',
            '    { service: { account: MIDCALL, subject: "midcall.conv.acme.*.ended" }, '
            'to: "midcall.conv.*.ended" }',
            '    { stream: { account: MIDCALL, subject: "midcall.conv.acme.*.pending" }, '
            'to: "midcall.conv.*.pending" }',
            '    { stream: { account: MIDCALL, subject: "midcall.conv.acme.*.result" }, '
            'to: "midcall.conv.*.result" }',
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
