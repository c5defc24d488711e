"""The data directory (``MIDCALL_DATA_DIR``), readable by its owner only.

It holds every tenant's tools, failed calls and usage (SQLite), the keys and
NATS passwords, and JetStream's messages: its directories are 0700 and its
files 0600. Made so from the start, and tightened when an older version left
them open.
"""

import contextlib
import os
import stat
import tempfile
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# The group's and others' permission bits: off everywhere in the data directory,
# and the umask of a child process that writes into it (nats-server, whose own
# defaults are 0640 files in 0750 directories).
OTHERS = 0o077
# What SQLite writes next to a database: created with the database file's mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """``path``, created if missing, as a directory only its owner can open.

    Found open, it was made by an older version, and so was everything in it:
    all of it is tightened.
    """
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & OTHERS:
        _tighten(path)
    return path


def private_file(path: Path) -> Path:
    """``path``, created empty if missing, readable and writable by its owner only."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    path.chmod(PRIVATE_FILE)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only, atomically (never a half-written file,
    never a moment with wider permissions), in a private directory."""
    private_dir(path.parent)
    # mkstemp creates the file with mode 0600.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def private_sqlite(database: Path) -> None:
    """A SQLite database file, made private before SQLite opens it.

    SQLite gives its journal, WAL and shared-memory files the database file's
    mode, so those are private too; ones an older version left are tightened.
    """
    private_file(database)
    for suffix in SQLITE_COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            Path(f"{database}{suffix}").chmod(PRIVATE_FILE)


def _tighten(root: Path) -> None:
    for directory, _, files in os.walk(root):
        os.chmod(directory, PRIVATE_DIR)
        for name in files:
            path = Path(directory, name)
            # A link's target may be anything of anyone's: not ours to change.
            with contextlib.suppress(FileNotFoundError):  # a file gone since the listing
                if not path.is_symlink():
                    path.chmod(PRIVATE_FILE)
