"""Sealing account secrets, and the master key they are sealed with."""

import base64
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.security.secret_box import (
    MASTER_KEY_FILE,
    CannotOpen,
    SecretBox,
    master_key,
    new_key_text,
)

KEY = bytes(range(32))
VALUE = "sk-live-0123456789"


def test_a_sealed_value_opens_in_its_own_slot_only() -> None:
    box = SecretBox(KEY)

    sealed = box.seal(VALUE, "acme.TOKEN")

    assert VALUE not in sealed
    assert box.open(sealed, "acme.TOKEN") == VALUE
    for elsewhere in ("globex.TOKEN", "acme.OTHER"):
        with pytest.raises(CannotOpen):
            box.open(sealed, elsewhere)


def test_each_seal_is_new_so_equal_values_cannot_be_told_apart() -> None:
    box = SecretBox(KEY)

    assert box.seal(VALUE, "acme.A") != box.seal(VALUE, "acme.A")


@pytest.mark.parametrize(
    "sealed",
    ["v2.AAAA", "v1.not-base64!!", "v1." + base64.urlsafe_b64encode(b"short").decode(), ""],
    ids=["version", "not-base64", "too-short", "empty"],
)
def test_what_does_not_open_says_so_without_crashing(sealed: str) -> None:
    with pytest.raises(CannotOpen):
        SecretBox(KEY).open(sealed, "acme.A")


def test_another_master_key_does_not_open_it() -> None:
    sealed = SecretBox(KEY).seal(VALUE, "acme.A")

    with pytest.raises(CannotOpen):
        SecretBox(bytes(32)).open(sealed, "acme.A")


def test_a_configured_key_is_used_and_nothing_is_written(tmp_path: Path) -> None:
    configured = new_key_text()

    assert master_key(configured, tmp_path) == base64.urlsafe_b64decode(configured)
    assert not (tmp_path / MASTER_KEY_FILE).exists()


def test_a_configured_key_that_is_not_one_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="MIDCALL_MASTER_KEY is not a master key"):
        master_key("too-short", tmp_path)


def test_without_one_a_key_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    first = master_key(None, data_dir)
    again = master_key(None, data_dir)

    path = data_dir / MASTER_KEY_FILE
    assert first == again
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in data_dir.iterdir()] == [MASTER_KEY_FILE]  # no temporary left


def test_an_existing_key_is_never_replaced(tmp_path: Path) -> None:
    kept = new_key_text()
    (tmp_path / MASTER_KEY_FILE).write_text(kept + "\n")

    assert master_key(None, tmp_path) == base64.urlsafe_b64decode(kept)
    assert (tmp_path / MASTER_KEY_FILE).read_text() == kept + "\n"


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        keys = set(pool.map(lambda _: master_key(None, tmp_path), range(64)))

    assert len(keys) == 1
