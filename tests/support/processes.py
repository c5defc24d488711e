"""The fabric as ``midcall up`` runs it: every service in a process of its own."""

from services.supervisor import Fabric
from shared.fabric.nats_server import free_port
from shared.settings import Settings


def up(
    settings: Settings,
    registry: int,
    billing: int | None = None,
    *,
    env: dict[str, str] | None = None,
) -> Fabric:
    """Not started yet; its REST API on ``registry``, the tests' APIs on loopback allowed."""
    return Fabric(
        settings,
        {
            "MIDCALL_ALLOW_DESTINATIONS": "127.0.0.1",
            "MIDCALL_REGISTRY_PORT": str(registry),
            "MIDCALL_BILLING_PORT": str(billing or free_port()),
            "MIDCALL_LOG_LEVEL": "WARNING",
            **(env or {}),
        },
    )
