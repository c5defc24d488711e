"""A fresh PostgreSQL schema for one run: its URL names the schema as the search path, so
the registry's and billing's tables start empty and are dropped with it afterwards."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

CONNECT_TIMEOUT_S = 3


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """``url`` with a new, empty schema as its search path; psycopg's OperationalError
    when the server cannot be reached."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{url}?options=-csearch_path%3D{schema}"
        finally:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
