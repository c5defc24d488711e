"""Runtime credentials in SQL: the registry's record of each account's runtime users.

Only a bcrypt digest of each password is kept (``shared.security.runtime_accounts``);
the live ones are mirrored into the ``midcall_runtime_credentials`` bucket,
from which the process running nats-server renders the accounts' NATS users.
Methods block: async callers use a thread.
"""

import secrets
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Column, Engine, func
from sqlmodel import Field, Session, SQLModel, col, select

from services.registry.accounts import ID_LENGTH
from services.registry.store import QuotaExceeded
from shared.contract.events import utcnow
from shared.process.storage import UtcDateTime
from shared.security.runtime_accounts import RuntimeCredential

# Enough to rotate every runtime fleet an account runs; each one is a NATS user,
# and every change has nats-server reload its accounts.
MAX_LIVE = 20


class CredentialInfo(BaseModel):
    """What anyone may see of a runtime credential: never its password."""

    credential_id: str
    account_id: str
    user: str
    inbox_prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


class RuntimeCredentialRow(SQLModel, table=True):
    __tablename__ = "runtime_credentials"

    credential_id: str = Field(primary_key=True, max_length=32)
    account_id: str = Field(foreign_key="accounts.account_id", index=True, max_length=ID_LENGTH)
    password_digest: str = Field(max_length=128)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))


class RuntimeCredentialStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, account_id: str, password_digest: str) -> RuntimeCredential:
        """A new live credential; ``QuotaExceeded`` past ``MAX_LIVE`` of the account's."""
        live = (
            select(func.count())
            .select_from(RuntimeCredentialRow)
            .where(col(RuntimeCredentialRow.account_id) == account_id)
            .where(col(RuntimeCredentialRow.revoked_at).is_(None))
        )
        credential = RuntimeCredential(
            credential_id=secrets.token_hex(8),
            account_id=account_id,
            password_digest=password_digest,
            created_at=utcnow(),
        )
        with Session(self._engine) as session:
            total = session.exec(live).one() + 1
            if total > MAX_LIVE:
                raise QuotaExceeded(account_id, "live runtime credentials", MAX_LIVE, total)
            session.add(RuntimeCredentialRow(**credential.model_dump()))
            session.commit()
        return credential

    def of_account(self, account_id: str) -> list[CredentialInfo]:
        query = (
            select(RuntimeCredentialRow)
            .where(col(RuntimeCredentialRow.account_id) == account_id)
            .order_by(col(RuntimeCredentialRow.created_at))
        )
        with Session(self._engine) as session:
            return [info(_credential(row), row.revoked_at) for row in session.exec(query)]

    def revoke(self, account_id: str, credential_id: str) -> bool:
        """Revoke one of the account's credentials; False when it has no such one."""
        with Session(self._engine) as session:
            row = session.get(RuntimeCredentialRow, credential_id)
            if row is None or row.account_id != account_id:
                return False
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.add(row)
                session.commit()
            return True

    def live(self) -> list[RuntimeCredential]:
        query = select(RuntimeCredentialRow).where(col(RuntimeCredentialRow.revoked_at).is_(None))
        with Session(self._engine) as session:
            return [_credential(row) for row in session.exec(query)]


def info(credential: RuntimeCredential, revoked_at: datetime | None = None) -> CredentialInfo:
    return CredentialInfo(
        credential_id=credential.credential_id,
        account_id=credential.account_id,
        user=credential.user,
        inbox_prefix=credential.inbox_prefix,
        created_at=credential.created_at,
        revoked_at=revoked_at,
    )


def _credential(row: RuntimeCredentialRow) -> RuntimeCredential:
    return RuntimeCredential.model_validate(row, from_attributes=True)
