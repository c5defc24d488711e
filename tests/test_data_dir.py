"""The data directory is its owner's only: directories 0700, files 0600, old ones tightened.

Under the umask most machines have (0022), so nothing is private by its grace.
"""

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.billing.store import UsageStore
from shared.process.storage import build_engine
from shared.settings import Settings
from tests.factories import usage

OPEN_UMASK = 0o022


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    previous = os.umask(OPEN_UMASK)
    yield
    os.umask(previous)


def modes(root: Path) -> dict[str, str]:
    """Every path under ``root`` (``root`` itself as ``.``) with its permission bits."""
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}


def test_the_database_its_journals_and_the_data_directory_are_the_owners_only(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    engine = build_engine(Settings(data_dir=data_dir))

    UsageStore(engine).record(usage("call-1"))

    # Still connected: the write-ahead log and its shared memory are there.
    assert modes(data_dir) == {
        ".": "0o700",
        "midcall.db": "0o600",
        "midcall.db-wal": "0o600",
        "midcall.db-shm": "0o600",
    }
    engine.dispose()


def test_an_open_data_directory_an_older_version_left_is_tightened_at_start(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "jetstream").mkdir(parents=True)
    (data_dir / "jetstream" / "meta.inf").write_text("{}")
    older = sqlite3.connect(data_dir / "midcall.db")  # as older versions made it: 0644
    older.execute("PRAGMA journal_mode=WAL")
    older.execute("CREATE TABLE kept (x)")
    older.commit()

    engine = build_engine(Settings(data_dir=data_dir))
    UsageStore(engine).record(usage("call-1"))

    assert modes(data_dir) == {
        ".": "0o700",
        "jetstream": "0o700",
        "jetstream/meta.inf": "0o600",
        "midcall.db": "0o600",
        "midcall.db-wal": "0o600",
        "midcall.db-shm": "0o600",
    }
    engine.dispose()
    older.close()
