"""NATS in operator mode for tests: an operator, its accounts and users as signed JWTs,
as ``nsc`` issues them, and the ``.creds`` file a user signs in with."""

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import nkeys

ACCOUNT_LIMITS = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
# JetStream: an account whose JWT gives it storage has it enabled (never the system's).
JETSTREAM_LIMITS = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass(frozen=True)
class Identity:
    """An nkey pair: the seed signs, the public key names."""

    seed: bytes
    public: str

    @classmethod
    def new(cls, prefix: int) -> "Identity":
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return cls(seed, nkeys.from_seed(bytearray(seed)).public_key.decode())

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWT of ``claims`` issued by this identity (header, claims, ed25519 signature)."""
        claims = {"iat": int(time.time()), "iss": self.public, **claims}
        # jti: the hash of the claims without it, as the jwt library makes it.
        digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
        claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
        header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = nkeys.from_seed(bytearray(self.seed)).sign(f"{header}.{body}".encode())
        return f"{header}.{body}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True)
class Operator:
    """One operator with a system account and one application account."""

    operator: Identity
    system: Identity
    account: Identity

    @classmethod
    def new(cls) -> "Operator":
        return cls(
            Identity.new(nkeys.PREFIX_BYTE_OPERATOR),
            Identity.new(nkeys.PREFIX_BYTE_ACCOUNT),
            Identity.new(nkeys.PREFIX_BYTE_ACCOUNT),
        )

    def server_config(self) -> str:
        """The operator-mode part of nats-server.conf: accounts resolved from memory."""
        operator = self.operator.sign(
            {"sub": self.operator.public, "name": "op", "nats": {"type": "operator", "version": 2}}
        )
        accounts = {
            self.system.public: self._account_jwt(self.system, "SYS", ACCOUNT_LIMITS),
            self.account.public: self._account_jwt(
                self.account, "APP", ACCOUNT_LIMITS | JETSTREAM_LIMITS
            ),
        }
        preload = "\n".join(f"  {public}: {json.dumps(jwt)}" for public, jwt in accounts.items())
        return (
            f"operator: {json.dumps(operator)}\n"
            f"system_account: {self.system.public}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n{preload}\n}}\n"
        )

    def _account_jwt(self, account: Identity, name: str, limits: dict[str, Any]) -> str:
        nats = {"limits": limits, "type": "account", "version": 2}
        return self.operator.sign({"sub": account.public, "name": name, "nats": nats})

    def credentials(self, name: str, issuer: Identity | None = None) -> str:
        """A ``.creds`` file's text for a new user of the application account (or a user
        that ``issuer`` signed, which the server does not know)."""
        user = Identity.new(nkeys.PREFIX_BYTE_USER)
        nats = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
        claims = {"sub": user.public, "name": name, "nats": {**nats, "type": "user", "version": 2}}
        jwt = (issuer or self.account).sign(claims)
        return (
            f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
