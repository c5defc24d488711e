"""The loop breaker: the same tool with the same arguments in one conversation, again and again.

A runaway LLM loop is a known failure of voice agents: it calls one tool
over and over while the caller waits. More than ``limit`` identical calls
in ``window_s`` are refused before they reach the API. Counted per
dispatcher process: with several replicas the bound is per replica.
"""

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

DEFAULT_LIMIT = 5
WINDOW_S = 60.0


def call_shape(conversation_id: str, tool: str, arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{conversation_id}\0{tool}\0{canonical}".encode()).hexdigest()


class LoopBreaker:
    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._swept_at = clock()

    def allow(self, conversation_id: str, tool: str, arguments: dict[str, Any]) -> bool:
        """Count this call; False when it is one too many in the window."""
        now = self._clock()
        times = self._seen.setdefault(call_shape(conversation_id, tool, arguments), deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        if now - self._swept_at >= self.window_s:
            self._sweep(now)
        return True

    def _sweep(self, now: float) -> None:
        # Once a window, so memory holds one window's calls and no call pays for all of them.
        self._swept_at = now
        for shape in [s for s, times in self._seen.items() if times[-1] <= now - self.window_s]:
            del self._seen[shape]
