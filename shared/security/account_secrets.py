"""Account secrets: their names, where each is kept, and how a tool refers to one.

The registry keeps them sealed (``shared.security.secret_box``) in SQL and mirrors the
ciphertexts into the ``midcall_secrets`` bucket under ``<account>.<NAME>``,
where the http-executor reads them. A tool refers to one as
``{{secrets.NAME}}``, and may use only its own account's.
"""

import re

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
_REFERENCE = re.compile(r"\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")


def slot(account_id: str, name: str) -> str:
    """Where a secret is kept in the bucket, and what its ciphertext is bound to."""
    return f"{account_id}.{name}"


def is_name(text: str) -> bool:
    return _NAME.fullmatch(text) is not None


def reference(name: str) -> str:
    return f"{{{{secrets.{name}}}}}"


def referenced_name(text: str) -> str | None:
    """The NAME when ``text`` is exactly one ``{{secrets.NAME}}``, else None (a literal)."""
    found = _REFERENCE.fullmatch(text)
    return found.group(1) if found else None
