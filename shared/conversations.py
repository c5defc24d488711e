"""Variables kept per conversation, in a KV bucket shared by injectors and the registry.

A tool's ``response.variables`` land here after each call, so a runtime can
render its prompt with them (``{{order_price}}``) however many injector
replicas wrote them: updates are compare-and-set on the key's revision.
Within one process, writers of a conversation queue on a lock instead of
racing each other's revisions, and each remembers the last revision it saw,
so a merge is usually one compare-and-set write with no read before it.

Each conversation's value names the account its calls are billed to, so the
registry shows an account its own conversations only.
"""

import asyncio
import json
import random
from collections import OrderedDict
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.templates import MISSING, TEMPLATE, as_text, lookup

MAX_CAS_TRIES = 20
LOCK_STRIPES = 64
# Conversations whose last revision is remembered; older ones are read again when written.
REMEMBERED = 4096


class ConversationVariables:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        # Striped: bounded memory however many conversations pass through.
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]
        self._known: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()

    async def get(self, conversation_id: str) -> tuple[dict[str, Any], str | None]:
        """The conversation's variables, and the account they belong to (None: unknown)."""
        variables, account_id, _ = await self._read(conversation_id)
        return variables, account_id

    async def merge(self, conversation_id: str, variables: dict[str, Any], account_id: str) -> None:
        """Set these variables, keeping the conversation's others; safe against racing writers."""
        async with self._locks[hash(conversation_id) % LOCK_STRIPES]:
            await self._merge(conversation_id, variables, account_id)

    async def _merge(
        self, conversation_id: str, variables: dict[str, Any], account_id: str
    ) -> None:
        # The remembered revision is a guess: if anyone wrote since (another replica),
        # the write is refused and the key is read before trying again.
        current, revision = self._known.get(conversation_id, ({}, None))
        for attempt in range(MAX_CAS_TRIES):
            merged = {**current, **variables}
            value = json.dumps({"account_id": account_id, "variables": merged}).encode()
            try:
                if revision is None:
                    written = await self._kv.create(conversation_id, value)
                else:
                    written = await self._kv.update(conversation_id, value, last=revision)
            except KeyWrongLastSequenceError:
                if attempt:  # a second refusal is a race: back off, jittered
                    await asyncio.sleep(random.uniform(0, 0.005 * attempt))
                current, _, revision = await self._read(conversation_id)
                continue
            self._remember(conversation_id, merged, written)
            return
        raise RuntimeError(f"variables of {conversation_id} kept changing; not merged")

    def _remember(self, conversation_id: str, variables: dict[str, Any], revision: int) -> None:
        self._known[conversation_id] = (variables, revision)
        self._known.move_to_end(conversation_id)
        if len(self._known) > REMEMBERED:
            self._known.popitem(last=False)

    async def _read(self, conversation_id: str) -> tuple[dict[str, Any], str | None, int | None]:
        try:
            entry = await self._kv.get(conversation_id)
        except KeyNotFoundError:
            return {}, None, None
        stored = json.loads(entry.value or b"{}")
        return dict(stored["variables"]), stored["account_id"], entry.revision


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
