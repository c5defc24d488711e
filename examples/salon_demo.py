"""What the framework examples share: the salon's demo tool, and a client of `midcall up`.

`midcall up` must be running in this directory (its data is in ./.midcall).
"""

import os
import pathlib

import httpx

from midcall.client import Credentials, MidcallClient

DATA_DIR = pathlib.Path(".midcall")
# Where `midcall up` serves the registry (MIDCALL_REGISTRY_PORT, as for `midcall up`).
REGISTRY = f"http://127.0.0.1:{os.environ.get('MIDCALL_REGISTRY_PORT', '8700')}"
INSTRUCTIONS = "You book haircuts. Use your tools; say what they tell you."
OPENING_HOURS = '''
async def opening_hours(ctx: RunContext, day: str) -> dict:
    """
    Tells when the salon is open on a day.

    Args:
        ctx: RunContext object
        day: The day of the week, in English
    """
    closed = day.lower() in ("sunday", "monday")
    return {"status": "success", "day": day, "hours": None if closed else "9:00 to 18:00"}
'''


def client() -> MidcallClient:
    """The shared runtime user, and the admin key to read the agent's tools."""
    port = (DATA_DIR / "nats.port").read_text().strip()
    return MidcallClient(
        f"nats://127.0.0.1:{port}",
        Credentials.from_data_dir(DATA_DIR),
        registry_url=REGISTRY,
        api_key=(DATA_DIR / "admin.key").read_text().strip(),
    )


async def register(mc: MidcallClient, agent: str) -> None:
    """The agent's one tool: `opening_hours`, a Python tool run in Midcall's sandbox."""
    tool = {
        "kind": "python",
        "python": {"code": OPENING_HOURS},
        "speech": {"on_send": "Let me check the opening hours."},
    }
    headers = {"Authorization": f"Bearer {mc.api_key}"}
    async with httpx.AsyncClient(base_url=REGISTRY, headers=headers) as registry:
        added = await registry.post(f"/v1/agents/{agent}/tools", json={"tools": [tool]})
    added.raise_for_status()
