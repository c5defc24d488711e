"""Whether a service without a REST API is ready: what its ``/healthz`` answers."""

from nats.aio.client import Client


class Readiness:
    """Ready once the service has started taking work, and while its NATS connection is
    up: a probe then tells a process that lost NATS from one that serves."""

    def __init__(self) -> None:
        self._client: Client | None = None

    def serving(self, client: Client) -> None:
        self._client = client

    def stopping(self) -> None:
        self._client = None

    def __call__(self) -> bool:
        return self._client is not None and self._client.is_connected
