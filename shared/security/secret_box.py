"""Account secrets at rest: AES-256-GCM under one master key.

The registry seals a value when an account sets it and never opens one; the
http-executor opens it just before rendering a request. Everything between
(SQL, the ``midcall_secrets`` bucket, NATS) carries only ciphertext.

Each ciphertext is bound to its slot (``<account>.<NAME>``, as AES-GCM
associated data): one copied into another account's slot, or under another
name, does not open.

The master key is ``MIDCALL_MASTER_KEY`` (base64 of 32 bytes), or the one the
first service to need it generates into the data directory (``master.key``,
readable by its owner only, never overwritten), as with the admin key.
"""

import base64
import binascii
import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.security.data_dir import private_dir
from shared.settings import Settings

MASTER_KEY_FILE = "master.key"
MASTER_KEY_ENV = "MIDCALL_MASTER_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12
# Written before every ciphertext, so a later scheme (or key rotation) can tell them apart.
VERSION = "v1"


class CannotOpen(Exception):
    """A sealed value that does not open: another master key, another slot, or damaged."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a master key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, value: str, slot: str) -> str:
        nonce = os.urandom(NONCE_BYTES)  # random 96-bit nonces: safe far past any secret count
        sealed = nonce + self._aead.encrypt(nonce, value.encode(), slot.encode())
        return f"{VERSION}.{base64.urlsafe_b64encode(sealed).decode()}"

    def open(self, sealed: str, slot: str) -> str:
        version, _, text = sealed.partition(".")
        if version != VERSION:
            raise CannotOpen(f"unknown format {version!r}")
        try:
            raw = base64.urlsafe_b64decode(text)
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], slot.encode())
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise CannotOpen(type(exc).__name__) from None
        return plain.decode()


def settings_master_key(settings: Settings) -> bytes:
    """The master key the settings name: ``MIDCALL_MASTER_KEY``, else the data directory's."""
    configured = settings.master_key.get_secret_value() if settings.master_key else None
    return master_key(configured, settings.data_dir)


def master_key(configured: str | None, data_dir: Path) -> bytes:
    """The master key: as configured, else the data directory's, created if there is none."""
    if configured:
        return parse_key(configured, MASTER_KEY_ENV)
    path = data_dir / MASTER_KEY_FILE
    if not path.exists():
        _create(path)
    return parse_key(path.read_text().strip(), str(path))


def parse_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise RuntimeError(
            f"{where} is not a master key: it must be base64 of {KEY_BYTES} random bytes, "
            'such as `python -c "import base64, secrets; '
            'print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"`'
        )
    return key


def new_key_text() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _create(path: Path) -> None:
    """Write a new key to ``path`` unless another process got there first.

    Written whole to a private temporary file, then linked into place: a process
    that loses the race reads the winner's complete key, never a half-written one,
    and a key once there is never replaced (every stored secret depends on it).
    """
    private_dir(path.parent)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".master-key-")
    try:
        with os.fdopen(descriptor, "w") as file:  # mkstemp makes it 0600
            file.write(new_key_text() + "\n")
        # Another process's key is there already: keep it.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
