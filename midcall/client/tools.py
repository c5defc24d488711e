"""An agent's tools as its LLM takes them (OpenAI, Anthropic, Gemini), kept current.

Read from the registry's REST API with the account's key: runtimes have no
access to the catalog itself. The list is asked for again every
``refresh_s`` with ``If-None-Match``, which costs the registry a 304 while
nothing changed; listeners hear each change.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import httpx

from shared.contract import manifest
from shared.contract.tools import Tool

log = logging.getLogger("midcall.client")
Listener = Callable[["AgentTools"], None]


class ToolsUnavailable(Exception):
    """The registry would not give the agent's tools (unknown agent, a refused key)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class AgentTools:
    """The agent's tools now: ``openai``, ``anthropic`` and ``gemini`` are what each
    provider's API takes as its ``tools``; ``on_change`` hears every change."""

    def __init__(self, agent_id: str, tools: list[Tool]) -> None:
        self.agent_id = agent_id
        self.tools = tools
        self._listeners: list[Listener] = []

    @property
    def names(self) -> list[str]:
        return [tool.name for tool in self.tools]

    @property
    def openai(self) -> list[dict[str, Any]]:
        return manifest.openai(self.tools)

    @property
    def anthropic(self) -> list[dict[str, Any]]:
        return manifest.anthropic(self.tools)

    @property
    def gemini(self) -> list[dict[str, Any]]:
        return manifest.gemini(self.tools)

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, tools: list[Tool]) -> None:
        self.tools = tools
        for listener in self._listeners:
            listener(self)


class ToolsWatch:
    """Keeps one agent's ``AgentTools`` to the registry."""

    def __init__(self, http: httpx.AsyncClient, agent_id: str, refresh_s: float) -> None:
        self.http = http
        self.agent_id = agent_id
        self.refresh_s = refresh_s
        self._etag: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.tools: AgentTools | None = None

    async def start(self) -> AgentTools:
        listed = await self._fetch()
        if listed is None:  # cannot be: nothing was asked with an ETag yet
            raise ToolsUnavailable(304, "the registry answered not modified to a first request")
        self.tools = AgentTools(self.agent_id, listed)
        self._task = asyncio.create_task(self._follow())
        return self.tools

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        assert self.tools is not None
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                listed = await self._fetch()
            except (httpx.HTTPError, ToolsUnavailable) as exc:
                log.warning("tools of %s not refreshed (kept as they were): %s", self.agent_id, exc)
                continue
            if listed is not None:
                self.tools._changed(listed)

    async def _fetch(self) -> list[Tool] | None:
        """The tools, or None while they are what was last fetched."""
        headers = {"If-None-Match": self._etag} if self._etag else {}
        response = await self.http.get(f"/v1/agents/{self.agent_id}/tools", headers=headers)
        if response.status_code == 304:
            return None
        if response.status_code != 200:
            raise ToolsUnavailable(response.status_code, _message(response))
        self._etag = response.headers.get("ETag")
        return [Tool.model_validate(tool) for tool in response.json()["tools"]]


def _message(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(response.json()["error"]["message"])
    return response.text[:200]
