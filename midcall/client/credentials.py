"""How a runtime signs in to Midcall's NATS: the shared ``runtime`` user, or an account's own."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED_USER = "runtime"


@dataclass(frozen=True)
class Credentials:
    """A NATS user and password, and the inbox prefix that user may read."""

    user: str
    password: str
    inbox_prefix: str
    # The account of an account's own credentials; None for the shared user.
    account_id: str | None = None

    @classmethod
    def shared(cls, password: str) -> "Credentials":
        """The ``runtime`` user: one customer's set-up, every conversation."""
        return cls(SHARED_USER, password, f"_INBOX_{SHARED_USER}")

    @classmethod
    def of_account(cls, issued: dict[str, Any]) -> "Credentials":
        """What ``POST /v1/accounts/{id}/runtime-credentials`` answered (or ``midcall
        runtime-creds`` printed): that account's agents, calls and conversations only."""
        return cls(
            issued["user"], issued["password"], issued["inbox_prefix"], issued.get("account_id")
        )

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> "Credentials":
        """The shared user's password, as ``midcall up`` keeps it."""
        passwords = json.loads((data_dir / "nats-credentials.json").read_text())
        return cls.shared(passwords[SHARED_USER])

    @property
    def catches_up(self) -> bool:
        """Whether this user may read ``MIDCALL_CONV`` through a JetStream consumer (the
        contract grants it to the shared user only, for now), and so hears what was
        published while it was away."""
        return self.user == SHARED_USER

    def connect_options(self) -> dict[str, Any]:
        return {"user": self.user, "password": self.password, "inbox_prefix": self.inbox_prefix}
