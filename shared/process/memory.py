"""How much memory a process may fill with work in hand before it stops taking more."""

import os
import time

# Reading /proc costs a system call: once per interval is fresh enough.
CHECK_INTERVAL_S = 0.1
STATM = "/proc/self/statm"


def resident_bytes() -> int | None:
    """This process's resident set now, or None where /proc is not there."""
    try:
        with open(STATM, "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


class MemoryBudget:
    """Whether the process's resident memory is over ``limit_bytes``.

    Where the resident set cannot be read (no /proc), the budget never says
    no and the consumers' own concurrency limits are the only bound.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._checked_at = 0.0
        self._over = False

    def exceeded(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= CHECK_INTERVAL_S:
            self._checked_at = now
            resident = resident_bytes()
            self._over = resident is not None and resident > self.limit_bytes
        return self._over
