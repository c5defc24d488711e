"""The registry's REST API: tool documents in, canonical tools and LLM manifests out.

Every write goes to SQL first (the source of truth), then to the catalog that
dispatchers watch. Writes are serialized so the catalog sees them in SQL's
order, and each one is safe to retry: a retry re-sends the catalog write.
"""

import asyncio
import hashlib
import json
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.registry import dialects, tool_secrets
from services.registry.bucket_mirror import BucketUnavailable
from services.registry.catalog_writer import CatalogWriter
from services.registry.dialects import rules
from services.registry.dialects.python_function import DEFAULT_MODULES
from services.registry.sandbox_check import SandboxCheck
from services.registry.secret_keeper import SecretKeeper
from services.registry.store import NotTheirs, QuotaExceeded, ToolStore
from shared.contract import json_depth, manifest
from shared.contract.catalog import DEFAULT_ACCOUNT, AgentEntry
from shared.contract.events import ID_PATTERN
from shared.contract.json_depth import TooDeep
from shared.contract.tools import TOOL_NAME_PATTERN, Tool
from shared.process.http_api import ApiError, error_body
from shared.security.api_keys import AUTHENTICATED, Caller, KeyRing, Principal, rest_app

# A tool document is configuration, not data: a megabyte is far more than any needs.
MAX_DOCUMENT_BYTES = 1024 * 1024

AgentId = Annotated[str, Path(pattern=ID_PATTERN)]
ToolName = Annotated[str, Path(pattern=TOOL_NAME_PATTERN)]


class AgentBody(BaseModel):
    """``PUT /v1/agents/{agent_id}``: which account pays for the agent's calls."""

    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(pattern=ID_PATTERN)
    name: str | None = Field(default=None, max_length=256)


def build_app(
    store: ToolStore,
    writer: CatalogWriter,
    keyring: KeyRing,
    secrets: SecretKeeper,
    python_modules: frozenset[str] = DEFAULT_MODULES,
    sandbox: SandboxCheck | None = None,
) -> FastAPI:
    """``python_modules``: what a python tool's code may import (``Settings.python_modules``);
    ``sandbox``: asks whether python tools can run (None: they are refused)."""
    app = rest_app("Midcall registry", keyring)
    app.add_exception_handler(BucketUnavailable, _bucket_unavailable)
    app.include_router(_Endpoints(store, writer, secrets, python_modules, sandbox).router())
    app.add_api_route("/healthz", _healthz, methods=["GET"])
    return app


class _Endpoints:
    def __init__(
        self,
        store: ToolStore,
        writer: CatalogWriter,
        secrets: SecretKeeper,
        python_modules: frozenset[str],
        sandbox: SandboxCheck | None,
    ) -> None:
        self._store = store
        self._writer = writer
        self._secrets = secrets
        self._modules = python_modules
        self._sandbox = sandbox
        self._writes = asyncio.Lock()

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/v1/agents/{agent_id}", dependencies=AUTHENTICATED)
        router.add_api_route("", self.put_agent, methods=["PUT"])
        router.add_api_route("", self.get_agent, methods=["GET"])
        router.add_api_route("/tools", self.post_tools, methods=["POST"], status_code=201)
        router.add_api_route("/tools", self.list_tools, methods=["GET"])
        router.add_api_route("/tools/{name}", self.get_tool, methods=["GET"])
        router.add_api_route(
            "/tools/{name}",
            self.delete_tool,
            methods=["DELETE"],
            status_code=204,
            response_class=Response,
        )
        router.add_api_route("/manifest", self.get_manifest, methods=["GET"])
        return router

    async def put_agent(self, agent_id: AgentId, body: AgentBody, caller: Caller) -> dict[str, Any]:
        """Create an agent or change it; only the admin moves an agent to another account."""
        if not caller.may_see(body.account_id):
            raise ApiError(403, "forbidden", "an account key puts agents in its own account only")
        agent = AgentEntry(agent_id=agent_id, **body.model_dump())
        async with self._writes:
            existing = await asyncio.to_thread(self._store.get_agent, agent_id)
            if existing is not None and not caller.may_see(existing.account_id):
                raise _unknown_agent(agent_id)
            try:
                await asyncio.to_thread(self._store.put_agent, agent)
            except QuotaExceeded as exc:
                raise over_quota(exc) from exc
            await self._writer.put_agent(agent)
            if existing is not None and existing.account_id != agent.account_id:
                await self._move_tools(agent_id, existing.account_id, agent.account_id)
        return agent.model_dump(mode="json")

    async def _move_tools(self, agent_id: str, source: str, target: str) -> None:
        """The agent's tools now use the ``target`` account's secrets: dispatchers must see
        the new owner. Each tool's own signing secret moves with it, there before the
        tool is, and gone from ``source`` once no dispatcher can still use it there."""
        moved = []
        for tool in await asyncio.to_thread(self._store.list_tools, agent_id):
            for secret in tool_secrets.own_signing_secrets(agent_id, tool):
                if await self._secrets.copy(secret, source, target):
                    moved.append(secret)
            await self._writer.put_tool(agent_id, tool)
        for secret in moved:
            await self._secrets.delete(source, secret)

    async def get_agent(self, agent_id: AgentId, caller: Caller) -> dict[str, Any]:
        agent = await asyncio.to_thread(self._require_agent, agent_id, caller)
        return agent.model_dump(mode="json")

    async def post_tools(
        self, agent_id: AgentId, request: Request, caller: Caller, dialect: str = dialects.MIDCALL
    ) -> dict[str, Any]:
        """Store the document's tools for the agent; see ``tool_secrets`` for their secrets."""
        media_type = dialects.require(dialect).media_type
        document = _document(await request.body(), media_type)
        parsed = dialects.parse(dialect, document, self._modules)
        async with self._writes:
            owner = await asyncio.to_thread(self._owner_for_tools, agent_id, caller)
            extracted = tool_secrets.extract_signing_secrets(agent_id, parsed)
            tools = tool_secrets.stamp(extracted.tools, owner, platform=caller.is_admin)
            if not caller.is_admin:
                known = await self._secrets.names(owner) | extracted.secrets.keys()
                tool_secrets.require_known(tools, owner, known)
            await self._require_sandbox(tools, owner)
            # The literal values never reach SQL in the sources kept either.
            sources = [extracted.scrub(s) for s in dialects.sources(dialect, document, parsed)]
            try:
                agent = await asyncio.to_thread(
                    self._store.put_tools, agent_id, dialect, tools, sources, caller.account_id
                )
            except QuotaExceeded as exc:
                raise over_quota(exc) from exc
            except NotTheirs as exc:
                raise _unknown_agent(agent_id) from exc
            # Before the catalog: no dispatcher sees a tool before its secrets are there.
            for name, value in extracted.secrets.items():
                await self._secrets.put(agent.account_id, name, value)
            tools = tool_secrets.stamp(tools, agent.account_id, platform=caller.is_admin)
            await self._writer.put_agent(agent)
            for tool in tools:
                await self._writer.put_tool(agent_id, tool)
        return _tools_body(agent_id, tools)

    async def _require_sandbox(self, tools: list[Tool], owner: str) -> None:
        if self._sandbox is not None:
            await self._sandbox.require(tools, owner)
        elif any(tool.kind == "python" for tool in tools):
            raise ApiError(503, "sandbox_unavailable", "Python tools cannot run here.")

    async def list_tools(
        self,
        agent_id: AgentId,
        caller: Caller,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The agent's tools, with an ``ETag``: a client that keeps them current asks with
        ``If-None-Match`` and gets a 304, without a body, while nothing changed."""
        tools = await asyncio.to_thread(self._agent_tools, agent_id, caller)
        body = json.dumps(_tools_body(agent_id, tools), separators=(",", ":")).encode()
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        asked = {tag.strip() for tag in (if_none_match or "").split(",")}
        if asked & {etag, "*"}:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/json", headers={"ETag": etag})

    async def get_tool(
        self, agent_id: AgentId, name: ToolName, caller: Caller, dialect: str = dialects.MIDCALL
    ) -> Response:
        """The tool as ``dialect`` writes it (canonical by default): JSON, or XML text."""
        media_type = dialects.require(dialect).media_type
        tool = await asyncio.to_thread(self._find_tool, agent_id, name, caller)
        document = dialects.export(dialect, tool, self._modules)
        if isinstance(document, str):
            return Response(document, media_type=media_type)
        return JSONResponse(document)

    async def delete_tool(self, agent_id: AgentId, name: ToolName, caller: Caller) -> Response:
        async with self._writes:
            agent = await asyncio.to_thread(self._store.get_agent, agent_id)
            if agent is not None and not caller.may_see(agent.account_id):
                raise _unknown_agent(agent_id)
            tool = await asyncio.to_thread(self._store.get_tool, agent_id, name)
            existed = await asyncio.to_thread(self._store.delete_tool, agent_id, name)
            # Also when SQL had no such tool: a retry after a failed catalog write heals it.
            await self._writer.delete_tool(agent_id, name)
            if agent is not None and tool is not None:
                for secret in tool_secrets.own_signing_secrets(agent_id, tool):
                    await self._secrets.delete(agent.account_id, secret)
        if not existed:
            await asyncio.to_thread(self._raise_unknown_tool, agent_id, name, caller)
        return Response(status_code=204)

    async def get_manifest(
        self,
        agent_id: AgentId,
        fmt: Annotated[manifest.Format, Query(alias="format")],
        caller: Caller,
    ) -> dict[str, Any]:
        tools = await asyncio.to_thread(self._agent_tools, agent_id, caller)
        return {"format": fmt, "tools": manifest.render(fmt, tools)}

    def _owner_for_tools(self, agent_id: str, caller: Principal) -> str:
        """The account the agent's tools belong to: its own, or the one a new agent joins."""
        agent = self._store.get_agent(agent_id)
        if agent is None:
            return caller.account_id or DEFAULT_ACCOUNT
        if not caller.may_see(agent.account_id):
            raise _unknown_agent(agent_id)
        return agent.account_id

    def _require_agent(self, agent_id: str, caller: Principal) -> AgentEntry:
        """The agent, if the caller may see it; another account's answers as unknown."""
        agent = self._store.get_agent(agent_id)
        if agent is None or not caller.may_see(agent.account_id):
            raise _unknown_agent(agent_id)
        return agent

    def _agent_tools(self, agent_id: str, caller: Principal) -> list[Tool]:
        self._require_agent(agent_id, caller)
        return self._store.list_tools(agent_id)

    def _find_tool(self, agent_id: str, name: str, caller: Principal) -> Tool:
        self._require_agent(agent_id, caller)
        tool = self._store.get_tool(agent_id, name)
        if tool is None:
            self._raise_unknown_tool(agent_id, name, caller)
        return tool

    def _raise_unknown_tool(self, agent_id: str, name: str, caller: Principal) -> NoReturn:
        self._require_agent(agent_id, caller)
        raise ApiError(404, "unknown_tool", f"agent '{agent_id}' has no tool '{name}'")


def _unknown_agent(agent_id: str) -> ApiError:
    return ApiError(404, "unknown_agent", f"agent '{agent_id}' is not registered")


def _document(body: bytes, media_type: str) -> Any:
    """A JSON dialect's document as JSON values; any other (XML) as text for its parser."""
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ApiError(
            413,
            "document_too_large",
            f"the document is {len(body)} bytes; the limit is {MAX_DOCUMENT_BYTES}",
        )
    if media_type != dialects.JSON:
        return _text(body)
    try:
        return json_depth.loads(body, "the document")
    except TooDeep as exc:
        raise rules.document_too_deep(exc) from exc
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from exc


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_text", f"the request body is not UTF-8 text: {exc}") from exc


def over_quota(exc: QuotaExceeded) -> ApiError:
    # 409, not 422: the request is valid and would fit an account with room; it conflicts
    # with what the account holds, which deleting or moving something resolves.
    details = {"quota": f"{exc.what}_per_account", "limit": exc.limit, "would_have": exc.total}
    return ApiError(409, "quota_exceeded", str(exc), details)


def _tools_body(agent_id: str, tools: list[Tool]) -> dict[str, Any]:
    return {"agent_id": agent_id, "tools": [dialects.show(tool) for tool in tools]}


async def _bucket_unavailable(_: Request, exc: Exception) -> JSONResponse:
    # The code predates API keys, whose changes reach the other services the same way.
    message = (
        "the change is saved but could not be sent to the services that read it "
        "(over NATS); retry the request"
    )
    return JSONResponse(error_body("catalog_unavailable", message, str(exc)), 503)


async def _healthz() -> dict[str, str]:
    return {"status": "ok"}
