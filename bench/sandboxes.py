"""The code-executor's jails seen from /proc: their CPU, and the memory of a warm one.

Each account's jail is a process tree under the code-executor: nsjail, its
python zygote, and the zygote's children (a spare, and a process per call,
reaped by the zygote when it ends). A process's CPU is its own plus what its
reaped children used (``cutime``/``cstime``), so the tree's is the sum over
its live processes: what ended is counted in its parent's. The kernel here
may not list a process's children, so the tree is read off every process's
parent in /proc.
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.procstats import TICKS_PER_S, stat_fields

PROC = Path("/proc")


@dataclass(frozen=True)
class Usage:
    """CPU seconds of one process: its own (all threads), and its reaped children's."""

    own_s: float
    children_s: float


def usage(pid: int) -> Usage:
    fields = stat_fields(pid)
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return Usage((utime + stime) / TICKS_PER_S, (cutime + cstime) / TICKS_PER_S)


def children_of() -> dict[int, list[int]]:
    """Every live process's children, by parent pid."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
        children[parent].append(int(entry.name))
    return children


def descendants(root: int, children: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


@dataclass(frozen=True)
class TreeCpu:
    """CPU seconds so far of code-executor processes, and of everything below them."""

    executor_s: float
    sandboxes_s: float

    @classmethod
    def take(cls, executors: list[int]) -> "TreeCpu":
        children = children_of()
        executor_s = sandboxes_s = 0.0
        for root in executors:
            mine = usage(root)
            executor_s += mine.own_s
            sandboxes_s += mine.children_s  # jails stopped and reaped
            for pid in descendants(root, children):
                sandboxes_s += _total_s(pid)
        return cls(executor_s, sandboxes_s)

    def ms_per_call(self, later: "TreeCpu", calls: int) -> tuple[float, float]:
        """(code-executor, sandboxes) CPU ms per call between this snapshot and ``later``."""
        per = 1000 / max(calls, 1)
        return (
            (later.executor_s - self.executor_s) * per,
            (later.sandboxes_s - self.sandboxes_s) * per,
        )


def _total_s(pid: int) -> float:
    try:
        counted = usage(pid)
    except (OSError, IndexError, ValueError):
        return 0.0  # reaped meanwhile: its parent counts it now
    return counted.own_s + counted.children_s


@dataclass(frozen=True)
class Jail:
    """One warm jail's memory, in MB: PSS shares pages mapped by several processes fairly."""

    zygote_rss_mb: float
    zygote_pss_mb: float | None  # None: smaps_rollup not readable here
    jail_pss_mb: float | None  # nsjail, zygote and its spare(s) together


def jails(executors: list[int]) -> list[Jail]:
    """Every jail running under the code-executor processes: nsjail with a zygote below."""
    children = children_of()
    found = []
    for root in executors:
        for nsjail in children.get(root, []):
            zygotes = children.get(nsjail, [])
            if len(zygotes) == 1:
                tree = [nsjail, *descendants(nsjail, children)]
                found.append(_jail(zygotes[0], tree))
    return found


def _jail(zygote: int, tree: list[int]) -> Jail:
    pss = [pss_mb(pid) for pid in tree]
    whole = None if any(p is None for p in pss) else sum(p for p in pss if p is not None)
    return Jail(rss_mb(zygote), pss_mb(zygote), whole)


def rss_mb(pid: int) -> float:
    return _kb(PROC / str(pid) / "status", "VmRSS:") or 0.0


def pss_mb(pid: int) -> float | None:
    try:
        return _kb(PROC / str(pid) / "smaps_rollup", "Pss:")
    except OSError:
        return None


def _kb(path: Path, key: str) -> float | None:
    for line in path.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return None


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None
