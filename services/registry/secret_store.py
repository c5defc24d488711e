"""Account secrets in SQL, sealed: the registry's source of truth for what each account set.

Only ciphertexts are kept (``shared.security.secret_box``); nothing here can open
one. Methods block: async callers use a thread.
"""

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Column, Engine, Text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel, col, delete, select

from shared.contract.events import utcnow
from shared.process.storage import UtcDateTime
from shared.security.account_secrets import slot

ID_LENGTH = 128
NAME_LENGTH = 64


class SecretInfo(BaseModel):
    """What anyone may see of a secret: its name and when it was set, never its value."""

    name: str
    updated_at: datetime


class SecretRow(SQLModel, table=True):
    __tablename__ = "account_secrets"

    # No foreign key to accounts: tools of agents in the implicit ``default`` account
    # (which may have no row) keep their signing secrets here too.
    account_id: str = Field(primary_key=True, max_length=ID_LENGTH)
    name: str = Field(primary_key=True, max_length=NAME_LENGTH)
    sealed: str = Field(sa_type=Text)
    updated_at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class SecretStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, account_id: str, name: str, sealed: str) -> SecretInfo:
        row = {"account_id": account_id, "name": name, "sealed": sealed, "updated_at": utcnow()}
        # One statement, safe against a concurrent insert by another registry.
        insert = (
            postgresql.insert(SecretRow)
            if self._engine.dialect.name == "postgresql"
            else sqlite.insert(SecretRow)
        )
        statement = insert.values([row]).on_conflict_do_update(
            index_elements=["account_id", "name"],
            set_={"sealed": row["sealed"], "updated_at": row["updated_at"]},
        )
        with Session(self._engine) as session:
            session.exec(statement)
            session.commit()
        return SecretInfo(name=name, updated_at=row["updated_at"])

    def infos(self, account_id: str) -> list[SecretInfo]:
        query = select(SecretRow.name, SecretRow.updated_at).where(
            col(SecretRow.account_id) == account_id
        )
        with Session(self._engine) as session:
            rows = session.exec(query.order_by(col(SecretRow.name))).all()
        return [SecretInfo(name=name, updated_at=updated_at) for name, updated_at in rows]

    def sealed(self, account_id: str, name: str) -> str | None:
        with Session(self._engine) as session:
            row = session.get(SecretRow, (account_id, name))
        return None if row is None else row.sealed

    def names(self, account_id: str) -> set[str]:
        return {info.name for info in self.infos(account_id)}

    def delete(self, account_id: str, name: str) -> bool:
        """Whether the account had it."""
        statement = delete(SecretRow).where(
            col(SecretRow.account_id) == account_id, col(SecretRow.name) == name
        )
        with Session(self._engine) as session:
            deleted = session.exec(statement).rowcount
            session.commit()
        return bool(deleted)

    def all_sealed(self) -> dict[str, str]:
        """Every ciphertext by its slot, for mirroring into the secrets bucket."""
        query = select(SecretRow.account_id, SecretRow.name, SecretRow.sealed)
        with Session(self._engine) as session:
            rows = session.exec(query).all()
        return {slot(account_id, name): sealed for account_id, name, sealed in rows}
