"""REST API keys: the admin key and account keys, checked the same way by every REST service.

- The **admin key** manages everything. It is ``MIDCALL_ADMIN_KEY``, or the
  one generated into the data directory at the first ``midcall up``.
- **Account keys** are made by the admin for one account and shown once.
  The registry keeps them in SQL and mirrors them, hashed, into the
  ``midcall_api_keys`` bucket, where every REST service looks them up; a
  revoked key is deleted there.

A key reads ``mck_<key_id>_<secret>``: the id finds the stored digest, the
secret (256 random bits, so a fast hash is enough) is compared to it in
constant time.
"""

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from shared.contract import subjects
from shared.contract.events import utcnow
from shared.fabric.outages import patiently
from shared.process.http_api import ApiError, install_error_handlers
from shared.security.data_dir import private_dir
from shared.settings import Settings

KEY_PREFIX = "mck"
KEY_ID = re.compile(r"[0-9a-f]{1,32}")
ADMIN_KEY_FILE = "admin.key"
# How long a key found in the bucket is trusted without looking again: a
# revocation takes effect everywhere within this.
CACHE_S = 2.0
# A key is looked up through a moment's NATS unavailability (a reload), not failed.
LOOKUP_PATIENCE_S = 2.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin (``account_id`` None) or one account."""

    account_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.account_id is None

    def may_see(self, account_id: str | None) -> bool:
        """Whether this caller may see what belongs to ``account_id``."""
        return self.is_admin or account_id == self.account_id


ADMIN = Principal(None)


class StoredKey(BaseModel):
    """An account key as kept: never the key itself, only its secret's digest."""

    key_id: str
    account_id: str
    digest: str
    created_at: datetime


def new_key(account_id: str) -> tuple[str, StoredKey]:
    """A fresh account key (to show once) and what is stored of it."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    stored = StoredKey(
        key_id=key_id, account_id=account_id, digest=_digest(secret), created_at=utcnow()
    )
    return f"{KEY_PREFIX}_{key_id}_{secret}", stored


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse(presented: str) -> tuple[str, str] | None:
    prefix, _, rest = presented.partition("_")
    key_id, _, secret = rest.partition("_")
    # Only the ids new_key makes: anything else is no key (and no valid bucket key).
    if prefix != KEY_PREFIX or not KEY_ID.fullmatch(key_id) or not secret:
        return None
    return key_id, secret


class KeyRing:
    """Tells who a presented key belongs to."""

    def __init__(self, admin_key: str, keys: KeyValue) -> None:
        if not admin_key:
            raise ValueError("an admin key is required")
        self._admin = admin_key.encode()
        self._keys = keys
        self._found: dict[str, tuple[StoredKey, float]] = {}

    async def principal(self, presented: str) -> Principal | None:
        if hmac.compare_digest(presented.encode(), self._admin):
            return ADMIN
        parsed = _parse(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        stored = await self._stored(key_id)
        if stored is None or not hmac.compare_digest(stored.digest, _digest(secret)):
            return None
        return Principal(stored.account_id)

    async def _stored(self, key_id: str) -> StoredKey | None:
        cached = self._found.get(key_id)
        if cached is not None and time.monotonic() - cached[1] < CACHE_S:
            return cached[0]
        try:
            entry = await patiently(
                lambda: self._keys.get(key_id), LOOKUP_PATIENCE_S, target=subjects.API_KEYS_BUCKET
            )
        except KeyNotFoundError:  # never made, or revoked (deleted)
            self._found.pop(key_id, None)
            return None
        if entry.value is None:
            return None
        stored = StoredKey.model_validate_json(entry.value)
        self._found[key_id] = (stored, time.monotonic())
        return stored


async def _principal(request: Request) -> Principal:
    """The caller of a request, from ``Authorization: Bearer <key>``; 401 without a valid one."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    ring: KeyRing = request.app.state.keyring
    found = await ring.principal(presented.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise ApiError(
            401,
            "unauthorized",
            "send a valid API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


Caller = Annotated[Principal, Depends(_principal)]
# For routers: every endpoint under it needs a valid key.
AUTHENTICATED = [Depends(_principal)]


def bearer(key: str) -> dict[str, str]:
    """The header a REST client sends its key in."""
    return {"Authorization": f"Bearer {key}"}


def rest_app(title: str, keyring: KeyRing) -> FastAPI:
    """A REST service's app: its keys, the error shape, and what the API is.

    FastAPI serves its OpenAPI document and docs pages to anyone; here they need
    a key, as every endpoint but health and metrics does.
    """
    app = FastAPI(title=title, version="1", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.keyring = keyring
    install_error_handlers(app)
    app.include_router(_described(app))
    return app


def _described(app: FastAPI) -> APIRouter:
    router = APIRouter(dependencies=AUTHENTICATED, include_in_schema=False)

    @router.get("/openapi.json")
    async def document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs")
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI")

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    return router


def require_admin(caller: Principal) -> None:
    if not caller.is_admin:
        raise ApiError(403, "forbidden", "only the admin key may do this")


def _configured(settings: Settings) -> str | None:
    return settings.admin_key.get_secret_value() if settings.admin_key else None


def admin_key(settings: Settings) -> str:
    """The admin key: as configured, else the one kept in the data directory."""
    configured = _configured(settings)
    if configured:
        return configured
    path = settings.data_dir / ADMIN_KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise RuntimeError(
            f"no admin key: set MIDCALL_ADMIN_KEY, or run `midcall up` once to create {path}"
        ) from None


def ensure_admin_key(settings: Settings) -> str | None:
    """Create the data directory's admin key if there is none; the new key, to print once."""
    path = settings.data_dir / ADMIN_KEY_FILE
    if _configured(settings) or path.exists():
        return None
    private_dir(settings.data_dir)
    key = f"{KEY_PREFIX}_admin_{secrets.token_urlsafe(32)}"
    # Readable by its owner only, and never overwritten if two processes race.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key
