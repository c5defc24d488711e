"""What a process cost, read from /proc: CPU time and peak resident memory (Linux only)."""

import os
import resource
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> None:
    """Soft open-file limit up to the hard one: 10,000 calls at once hold 10,000 sockets."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields from the third (state) on: ``[1]`` is the parent's pid,
    ``[11:15]`` utime, stime, cutime and cstime in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: count fields after its closing ')'.
    return stat[stat.rindex(")") + 2 :].split()


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of the whole process (all its threads) so far."""
    fields = stat_fields(pid)
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / TICKS_PER_S


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has ever held."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds per named process at one moment; two of them give what a phase cost."""

    seconds: dict[str, float]

    @classmethod
    def take(cls, pids: dict[str, int]) -> "CpuSnapshot":
        return cls({name: cpu_s(pid) for name, pid in pids.items()})

    def ms_per_call(self, later: "CpuSnapshot", calls: int) -> dict[str, float]:
        return {
            name: (later.seconds[name] - before) * 1000 / max(calls, 1)
            for name, before in self.seconds.items()
        }
