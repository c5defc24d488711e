"""The REST admin key the tests' services run with, and a keys bucket with no account keys."""

from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError

from shared.security.api_keys import KeyRing, bearer

ADMIN_KEY = "mck_admin_tests-only-not-secret"
AS_ADMIN = bearer(ADMIN_KEY)


class NoAccountKeys:
    """A keys bucket holding none: for an app tested without NATS, only the admin key works."""

    async def get(self, key: str) -> None:
        raise KeyNotFoundError


def admin_only() -> KeyRing:
    return KeyRing(ADMIN_KEY, NoAccountKeys())  # type: ignore[arg-type]


@dataclass
class Keys:
    """REST headers of two accounts' keys (the ``keys`` fixture)."""

    acme: dict[str, str]
    globex: dict[str, str]
