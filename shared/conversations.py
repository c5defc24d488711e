"""Variables kept per conversation, in a KV bucket shared by injectors and the registry.

A tool's ``response.variables`` land here after each call, so a runtime can
render its prompt with them (``{{order_price}}``) however many injector
replicas wrote them: updates are compare-and-set on the key's revision.
Within one process, writers of a conversation queue on a lock instead of
racing each other's revisions.
"""

import asyncio
import json
import random
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.templates import MISSING, TEMPLATE, as_text, lookup

MAX_CAS_TRIES = 20
LOCK_STRIPES = 64


class ConversationVariables:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        # Striped: bounded memory however many conversations pass through.
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    async def get(self, conversation_id: str) -> dict[str, Any]:
        return (await self._read(conversation_id))[0]

    async def merge(self, conversation_id: str, variables: dict[str, Any]) -> None:
        """Set these variables, keeping the conversation's others; safe against racing writers."""
        async with self._locks[hash(conversation_id) % LOCK_STRIPES]:
            await self._merge(conversation_id, variables)

    async def _merge(self, conversation_id: str, variables: dict[str, Any]) -> None:
        for attempt in range(MAX_CAS_TRIES):
            current, revision = await self._read(conversation_id)
            value = json.dumps({**current, **variables}).encode()
            try:
                if revision is None:
                    await self._kv.create(conversation_id, value)
                else:
                    await self._kv.update(conversation_id, value, last=revision)
                return
            except KeyWrongLastSequenceError:
                # Another replica wrote in between: read again, after a jittered pause.
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise RuntimeError(f"variables of {conversation_id} kept changing; not merged")

    async def _read(self, conversation_id: str) -> tuple[dict[str, Any], int | None]:
        try:
            entry = await self._kv.get(conversation_id)
        except KeyNotFoundError:
            return {}, None
        return dict(json.loads(entry.value or b"{}")), entry.revision


def render_prompt(template: str, variables: dict[str, Any]) -> tuple[str, list[str]]:
    """``{{name}}`` (or ``{{name.path}}``) filled from the variables; unset ones render empty.

    Returns the text and the names that were unset, in order of appearance.
    """
    unset: list[str] = []

    def fill(match: Any) -> str:
        value = lookup(variables, match.group(1))
        if value is MISSING and match.group(1) not in unset:
            unset.append(match.group(1))
        return as_text(value)

    return TEMPLATE.sub(fill, template), unset
