"""Accounts and their API keys in SQL, the registry's source of truth for who may call.

A key is stored as its secret's digest only (``shared.security.api_keys``); the
registry mirrors the live ones into the ``midcall_api_keys`` bucket, where
every REST service checks them. Methods block: async callers use a thread.
"""

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Column, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from shared.contract.events import utcnow
from shared.process.storage import UtcDateTime
from shared.security.api_keys import StoredKey

ID_LENGTH = 128


class AccountExists(Exception):
    """``create`` was asked for an account id that is taken."""


class Account(BaseModel):
    account_id: str
    name: str | None = None
    created_at: datetime


class KeyInfo(BaseModel):
    """What anyone may see of a key: never the key, nor its digest."""

    key_id: str
    account_id: str
    created_at: datetime
    revoked_at: datetime | None = None


class AccountRow(SQLModel, table=True):
    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=ID_LENGTH)
    name: str | None = Field(default=None, max_length=256)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "api_keys"

    key_id: str = Field(primary_key=True, max_length=32)
    account_id: str = Field(foreign_key="accounts.account_id", index=True, max_length=ID_LENGTH)
    digest: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))


class AccountStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, account_id: str, name: str | None) -> Account:
        row = AccountRow(account_id=account_id, name=name, created_at=utcnow())
        account = _account(row)
        try:
            with Session(self._engine) as session:
                session.add(row)
                session.commit()
        except IntegrityError as exc:
            raise AccountExists(account_id) from exc
        return account

    def get(self, account_id: str) -> Account | None:
        with Session(self._engine) as session:
            row = session.get(AccountRow, account_id)
            return None if row is None else _account(row)

    def all(self) -> list[Account]:
        with Session(self._engine) as session:
            rows = session.exec(select(AccountRow).order_by(col(AccountRow.account_id))).all()
            return [_account(row) for row in rows]

    def add_key(self, stored: StoredKey) -> KeyInfo:
        row = ApiKeyRow(**stored.model_dump())
        info = _key_info(row)
        with Session(self._engine) as session:
            session.add(row)
            session.commit()
        return info

    def keys(self, account_id: str) -> list[KeyInfo]:
        query = select(ApiKeyRow).where(col(ApiKeyRow.account_id) == account_id)
        with Session(self._engine) as session:
            return [_key_info(r) for r in session.exec(query.order_by(col(ApiKeyRow.created_at)))]

    def revoke(self, account_id: str, key_id: str) -> bool:
        """Whether the account had that key (revoking one already revoked changes nothing)."""
        with Session(self._engine) as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None or row.account_id != account_id:
                return False
            row.revoked_at = row.revoked_at or utcnow()
            session.add(row)
            session.commit()
        return True

    def live_keys(self) -> list[StoredKey]:
        """Every key not revoked, for mirroring into the keys bucket."""
        query = select(ApiKeyRow).where(col(ApiKeyRow.revoked_at).is_(None))
        with Session(self._engine) as session:
            return [
                StoredKey.model_validate(row, from_attributes=True)
                for row in session.exec(query).all()
            ]


def _account(row: AccountRow) -> Account:
    return Account.model_validate(row, from_attributes=True)


def _key_info(row: ApiKeyRow) -> KeyInfo:
    return KeyInfo.model_validate(row, from_attributes=True)
