"""Midcall under test: ``midcall up``'s processes and an embedded nats-server, in a temp dir.

As ``midcall up`` runs it: nats-server with a user per role, runtimes in an
account of their own. Also what the benchmark asks of the fabric from outside,
as an operator would (the ``ops`` user): the processes' ids (to read their
cost from /proc), whether billing has stored every usage record (JetStream
consumer state), and billing's totals.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from bench.plan import ACCOUNT, AGENT, tools
from services.billing.app import USAGE
from services.code_executor.main import DURABLE as CODE_WORK
from services.result_injector.app import DEADLINES
from services.supervisor import Fabric
from shared.contract import subjects
from shared.fabric.nats_server import free_port
from shared.security.api_keys import bearer
from shared.security.nats_auth import Role, connect_options
from shared.settings import Settings, servers

POLL_S = 0.02


class BenchFabric:
    def __init__(self, fabric: Fabric, registry_url: str, billing_url: str) -> None:
        self.fabric = fabric
        self.registry_url = registry_url
        self.billing_url = billing_url

    @property
    def nats_url(self) -> str:
        return self.fabric.nats_url

    @property
    def settings(self) -> Settings:
        """What the services were started with (they also read ``MIDCALL_*`` themselves)."""
        return self.fabric.settings

    def runtime_options(self) -> dict[str, Any]:
        """nats.connect options of a voice runtime (the ``runtime`` user)."""
        return self.fabric.runtime_options()

    async def ops(self) -> Client:
        """An operator's connection: streams' and consumers' state, nothing more."""
        options = connect_options(Role.OPS, self.fabric.credentials[Role.OPS])
        return await nats.connect(servers(self.nats_url), **options)

    def pids(self) -> dict[str, int]:
        """Every service process by key (``dispatcher-2``), and the nats-server (each
        node's, ``nats-server-n0``..., of a cluster)."""
        pids = {key: child.pid for key, child in self.fabric.children.items()}
        if self.fabric.cluster is not None:
            nodes = self.fabric.cluster.nodes
            return {**pids, **{f"nats-server-{n.node.name}": n.pid for n in nodes if n.node}}
        return {**pids, "nats-server": _nats_server_pid(self.fabric.settings.data_dir)}

    def service_pids(self, service: str) -> list[int]:
        """The processes of one service, all its replicas."""
        return [
            child.pid
            for key, child in self.fabric.children.items()
            if self.fabric.instances[key] == service
        ]

    def rest(self, base_url: str) -> httpx.AsyncClient:
        """A REST client of the fabric's registry or billing, with the admin key."""
        return httpx.AsyncClient(base_url=base_url, headers=bearer(self.fabric.admin_key))

    async def register(self, api_url: str, delay_s: float) -> None:
        async with self.rest(self.registry_url) as http:
            agent = await http.put(f"/v1/agents/{AGENT}", json={"account_id": ACCOUNT})
            agent.raise_for_status()
            await _add_tools(http, AGENT, tools(api_url, delay_s))

    async def add_tools(self, agent_id: str, *added: dict[str, Any]) -> None:
        """More tools for an agent there already."""
        async with self.rest(self.registry_url) as http:
            await _add_tools(http, agent_id, list(added))

    async def add_account(self, account_id: str) -> None:
        """A new account, made as the admin makes one."""
        async with self.rest(self.registry_url) as http:
            _raise_for_status(await http.post("/v1/accounts", json={"account_id": account_id}))

    async def put_agent(self, agent_id: str, account_id: str) -> None:
        """A new agent in ``account_id``, or an agent moved there (with its tools)."""
        async with self.rest(self.registry_url) as http:
            moved = await http.put(f"/v1/agents/{agent_id}", json={"account_id": account_id})
            _raise_for_status(moved)

    async def billed_calls(self, accounts: Sequence[str] = (ACCOUNT,)) -> int:
        """The calls billing has stored for these accounts, summed."""
        calls = 0
        async with self.rest(self.billing_url) as http:
            for account in accounts:
                usage = await http.get("/v1/usage", params={"account_id": account})
                usage.raise_for_status()
                calls += int(usage.json()["calls"])
        return calls


async def _add_tools(http: httpx.AsyncClient, agent_id: str, added: list[dict[str, Any]]) -> None:
    _raise_for_status(await http.post(f"/v1/agents/{agent_id}/tools", json={"tools": added}))


def _raise_for_status(response: httpx.Response) -> None:
    """httpx's error, with what the registry said was wrong."""
    if response.is_error:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text}"
        )


async def usage_seq(js: JetStreamContext) -> int:
    """The usage stream's last sequence: a mark to count a phase's records from."""
    return int((await js.stream_info(subjects.USAGE_STREAM)).state.last_seq)


async def wait_billed(js: JetStreamContext, since_seq: int, records: int, timeout_s: float) -> bool:
    """Until ``records`` usage records past ``since_seq`` are in and billing acked them all.

    The injector publishes usage after the result, so billing's consumer being
    idle is not enough: the records must first have reached the stream.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + timeout_s
    while loop.time() < give_up_at:
        if await usage_seq(js) >= since_seq + records:
            billing = await js.consumer_info(subjects.USAGE_STREAM, USAGE.name)
            if billing.num_pending == 0 and billing.num_ack_pending == 0:
                return True
        await asyncio.sleep(POLL_S)
    return False


async def wait_timers_fired(js: JetStreamContext, timeout_s: float) -> bool:
    """Until every deadline timer armed so far has fired and been handled.

    A schedule stays in the work-queue stream until it fires, and what it fires
    until an injector acks it: the stream empties once all are done.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + timeout_s
    while loop.time() < give_up_at:
        if not (await js.stream_info(subjects.TIMERS_STREAM)).state.messages:
            return True
        await asyncio.sleep(POLL_S)
    return False


# Every durable the hot path reads, by stream.
HOT_DURABLES = (
    (subjects.CALLS_STREAM, "midcall-dispatcher"),
    (subjects.WORK_STREAM, "midcall-http-executor"),
    (subjects.WORK_STREAM, CODE_WORK.name),
    (subjects.WORK_STREAM, "midcall-result-injector"),
    (subjects.USAGE_STREAM, USAGE.name),
    (subjects.TIMERS_STREAM, DEADLINES.name),
)


async def redeliveries(js: JetStreamContext) -> int:
    """Messages delivered more than once so far, over the hot path's durables."""
    infos = [await js.consumer_info(stream, durable) for stream, durable in HOT_DURABLES]
    return sum(info.num_redelivered or 0 for info in infos)


def _nats_server_pid(data_dir: Path) -> int:
    # nats-server names its ports file <executable>_<pid>.ports.
    ports_files = list((data_dir / "run").glob("*.ports"))
    if len(ports_files) != 1:
        raise RuntimeError(f"expected one nats-server ports file, found {ports_files}")
    return int(ports_files[0].stem.rsplit("_", 1)[1])


@asynccontextmanager
async def running(
    data_dir: Path, replicas: int, nats_nodes: int = 1, database_url: str | None = None
) -> AsyncIterator[BenchFabric]:
    """The fabric on free ports, allowed to call loopback, quiet but for warnings.

    ``nats_nodes`` above 1: NATS is a cluster of that many nodes, every stream and
    bucket with a copy on each (R3 for three). ``database_url``: the registry's and
    billing's database (by default SQLite in ``data_dir``)."""
    registry_port, billing_port = free_port(), free_port()
    env = {
        "MIDCALL_ALLOW_DESTINATIONS": "127.0.0.1",
        "MIDCALL_REGISTRY_PORT": str(registry_port),
        "MIDCALL_BILLING_PORT": str(billing_port),
        "MIDCALL_LOG_LEVEL": "WARNING",
        "MIDCALL_STREAM_REPLICAS": str(nats_nodes),
        **({"MIDCALL_DATABASE_URL": database_url} if database_url else {}),
    }
    # Always an embedded server, even if MIDCALL_NATS_URL is set: its cost is measured.
    settings = Settings(data_dir=data_dir, nats_url=None, stream_replicas=nats_nodes)
    fabric = Fabric(settings, env, replicas=replicas, nats_nodes=nats_nodes)
    try:
        await fabric.start()
        yield BenchFabric(
            fabric, f"http://127.0.0.1:{registry_port}", f"http://127.0.0.1:{billing_port}"
        )
    finally:
        await fabric.stop()
