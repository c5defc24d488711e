"""Variables kept per conversation, in a KV bucket shared by injectors and the registry.

A tool's ``response.variables`` land here after each call, so a runtime can
render its prompt with them (``{{order_price}}``) however many injector
replicas wrote them: updates are compare-and-set on the key's revision.
Within one process, writers of a conversation queue on a lock instead of
racing each other's revisions, and each remembers the last revision it saw,
so a merge is usually one compare-and-set write with no read before it.

Variables are an account's own: the key is the ``Conversation.key`` (account
and conversation id), so two accounts using one conversation id never see or
overwrite each other's. Values written before that were keyed by the
conversation id alone, naming their account inside; they are read as their
account's (and carried over by its next write) until the bucket's one-day
TTL takes them.
"""

import asyncio
import json
import random
from collections import OrderedDict
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.contract.addressing import Conversation, conversation_key
from shared.contract.templates import MISSING, TEMPLATE, as_text, lookup

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

    async def get(self, account_id: str, conversation_id: str) -> dict[str, Any]:
        """The variables of the account's conversation (none yet is an empty dict)."""
        variables, _ = await self._read(account_id, conversation_id)
        return variables

    async def merge(self, conversation: Conversation, variables: dict[str, Any]) -> None:
        """Set these variables, keeping the conversation's others; safe against racing writers."""
        async with self._locks[hash(conversation.key) % LOCK_STRIPES]:
            await self._merge(conversation.account_id, conversation.conversation_id, variables)

    async def _merge(
        self, account_id: str, conversation_id: str, variables: dict[str, Any]
    ) -> None:
        # The remembered revision is a guess: if anyone wrote since (another replica),
        # the write is refused and the key is read before trying again.
        key = conversation_key(account_id, conversation_id)
        known = self._known.get(key)
        current, revision = (
            known if known else (await self._legacy(account_id, conversation_id), None)
        )
        for attempt in range(MAX_CAS_TRIES):
            merged = {**current, **variables}
            value = json.dumps({"account_id": account_id, "variables": merged}).encode()
            try:
                if revision is None:
                    written = await self._kv.create(key, value)
                else:
                    written = await self._kv.update(key, value, last=revision)
            # Not found: nats-py's create reads a refused key itself, and a deposed leader
            # (a cluster's election) can refuse a key and then not have it. Read again.
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                if attempt:  # a second refusal is a race: back off, jittered
                    await asyncio.sleep(random.uniform(0, 0.005 * attempt))
                current, revision = await self._read(account_id, conversation_id)
                continue
            self._remember(key, merged, written)
            return
        raise RuntimeError(f"variables of {key} kept changing; not merged")

    def _remember(self, key: str, variables: dict[str, Any], revision: int) -> None:
        self._known[key] = (variables, revision)
        self._known.move_to_end(key)
        if len(self._known) > REMEMBERED:
            self._known.popitem(last=False)

    async def _read(
        self, account_id: str, conversation_id: str
    ) -> tuple[dict[str, Any], int | None]:
        """The variables and the key's revision (None: no key yet, create it)."""
        stored = await self._value(conversation_key(account_id, conversation_id))
        if stored is not None:
            return stored
        return await self._legacy(account_id, conversation_id), None

    async def _legacy(self, account_id: str, conversation_id: str) -> dict[str, Any]:
        """What the account's conversation held under the old key (gone with the TTL; a
        first write carries it over, so reading it costs one get per new conversation
        for a day after an upgrade, and can go in the version after)."""
        legacy = await self._value(conversation_id, account_id)
        return legacy[0] if legacy is not None else {}

    async def _value(
        self, key: str, legacy_account: str | None = None
    ) -> tuple[dict[str, Any], int] | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        stored = json.loads(entry.value or b"{}")
        if legacy_account is not None and stored.get("account_id") != legacy_account:
            return None  # another account's, under the old key
        assert entry.revision is not None
        return dict(stored["variables"]), entry.revision


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
