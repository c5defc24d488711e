"""Getting out of a python tool's sandbox, tried the ways a customer's code would.

Given a function registered as a python tool that tries to reach what its jail
hides (files, the service's environment, the network, processes, memory, CPU,
output, other calls and other accounts), when a runtime calls it, then the
attempt fails with an error the runtime can say, and the account's next
ordinary call succeeds: the fabric is healthy.

The import check refuses ``os`` and ``socket`` by name, so the functions reach
them the way such code does: ``os._wrap_close``, found among ``object``'s
subclasses, has the ``os`` module in its globals, and ``os.sys.modules`` holds
every module the interpreter loaded. What stops them is the jail.
"""

import json
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from services.code_executor.jail import Jail
from tests.support.api import RecordingApi
from tests.support.fabric import Fabric, start_fabric, stop_fabric
from tests.support.keys import AS_ADMIN, Keys
from tests.test_dialects_end_to_end import AGENT, success
from tests.test_python_tools import python_tool
from tests.test_spine import error_result, events_of, new_call, place

# The os module, without an import statement.
REACH_OS = (
    '[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "_wrap_close"][0]'
    '.__init__.__globals__["sys"].modules["os"]'
)


def function(code: str, name: str = "tool", **fields: Any) -> dict[str, Any]:
    """A python tool whose parameters the registry derives from the function's signature."""
    tool = python_tool(code, name, **fields)
    tool.pop("parameters", None)
    return tool


OK = function(
    "async def ok(ctx: RunContext) -> dict:\n"
    '    """Answers, as an ordinary function does."""\n'
    '    return {"status": "success"}\n',
    "ok",
)
FETCH = '''async def tool(ctx: RunContext, target: str) -> dict:
    """Calls a URL, following redirects.

    Args:
        target: The URL.
    """
    async with httpx.AsyncClient(follow_redirects=True) as client:
        response = await client.get(target)
    return {"status": "success", "code": response.status_code}
'''
NOT_ALLOWED = "(allowed: datetime, httpx, json, logging, math, re, typing)"
REFUSED = (
    "is not an address tools may call: loopback, private, link-local and metadata addresses "
    "are refused unless the operator allows them"
)


def attempt(statements: str) -> dict[str, Any]:
    """The python tool ``tool``: ``statements`` from line 8, with ``os`` reached and
    ``target`` its argument; it returns what they left in ``got``."""
    code = f'''async def tool(ctx: RunContext, target: str) -> dict:
    """Tries to get out of its sandbox.

    Args:
        target: What it tries to reach.
    """
    os = REACH_OS
{statements}
    return {{"status": "success", "got": got}}
'''
    return function(code.replace("REACH_OS", REACH_OS))


def tries(expression: str) -> dict[str, Any]:
    """A python tool evaluating ``expression`` on line 8 and returning its ``repr``."""
    return attempt(f"    got = repr({expression})")


async def run(
    fabric: Fabric, tool: str = "tool", target: str = "", agent: str = AGENT, **fields: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The call, and the result event the runtime heard."""
    call = new_call(tool=tool, agent_id=agent, arguments={"target": target}, **fields)
    await place(fabric, call)
    return call, events_of(fabric, call)[-1]


async def next_call_succeeds(fabric: Fabric, agent: str = AGENT) -> None:
    """The account's next ordinary call (``ok``, registered beside the attempt) succeeds."""
    call, last = await run(fabric, "ok", agent=agent)
    assert last == success(call, {"status": "success"})


def tool_error(call: dict[str, Any], message: str, kind: str = "exception") -> dict[str, Any]:
    return error_result(
        call, "tool_error", f"The tool action {message}", {"kind": kind}, attempts=1
    )


# --- files, environment, imports, sockets, processes: each a clear exception ---------------

ESCAPES = [
    # The machine's files, the service's data and environment: not in the jail.
    pytest.param(
        'open("/etc/passwd").read()',
        "",
        "FileNotFoundError: [Errno 2] No such file or directory: '/etc/passwd'",
        id="etc-passwd",
    ),
    pytest.param(
        "os.listdir(target)",
        "{data_dir}",
        "FileNotFoundError: [Errno 2] No such file or directory: '{target}'",
        id="data-directory",
    ),
    pytest.param(
        'open(target, "rb").read()',
        "{data_dir}/fabric.db",
        "FileNotFoundError: [Errno 2] No such file or directory: '{target}'",
        id="database-file",
    ),
    pytest.param('os.environ["PATH"]', "", "KeyError: 'PATH'", id="environment"),
    # The import check: a clear error, not the boundary (the jail is).
    pytest.param(
        '__import__("socket")',
        "",
        f"ImportError: module 'socket' is not available to a tool {NOT_ALLOWED}",
        id="import-socket",
    ),
    pytest.param(
        '__import__("ctypes")',
        "",
        f"ImportError: module 'ctypes' is not available to a tool {NOT_ALLOWED}",
        id="import-ctypes",
    ),
    pytest.param(
        '__import__("os")',
        "",
        f"ImportError: module 'os' is not available to a tool {NOT_ALLOWED}",
        id="import-os",
    ),
    pytest.param(
        '__builtins__["__import__"]("subprocess")',
        "",
        f"ImportError: module 'subprocess' is not available to a tool {NOT_ALLOWED}",
        id="builtins-import-subprocess",
    ),
    # Sockets other than Unix ones: refused by seccomp.
    pytest.param(
        'os.sys.modules["socket"].socket(2, 3, 1)',  # AF_INET, SOCK_RAW, ICMP
        "",
        "PermissionError: [Errno 1] Operation not permitted",
        id="raw-socket",
    ),
    pytest.param(
        'os.sys.modules["socket"].create_connection(("127.0.0.1", int(target)))',
        "{api_port}",
        "PermissionError: [Errno 1] Operation not permitted",
        id="tcp-to-the-api",
    ),
    # Processes and threads: none of the call's own (RLIMIT_NPROC), no shell to run.
    pytest.param(
        "os.fork()", "", "BlockingIOError: [Errno 11] Resource temporarily unavailable", id="fork"
    ),
    pytest.param(
        'os.sys.modules["_thread"].start_new_thread(len, ((),))',
        "",
        "RuntimeError: can't start new thread",
        id="thread",
    ),
    pytest.param(
        'os.sys.modules["builtins"].__import__("subprocess").run(["id"])',
        "",
        "BlockingIOError: [Errno 11] Resource temporarily unavailable",
        id="subprocess",
    ),
    pytest.param(
        'os.execv("/bin/sh", ["sh", "-c", "id"])',
        "",
        "FileNotFoundError: [Errno 2] No such file or directory",
        id="exec-a-shell",
    ),
    # The jail itself: no privilege, read-only files, the zygote out of reach.
    pytest.param(
        "os.setuid(0)", "", "PermissionError: [Errno 1] Operation not permitted", id="setuid-root"
    ),
    pytest.param(
        'open("/usr/lib/left-behind", "w")',
        "",
        "OSError: [Errno 30] Read-only file system: '/usr/lib/left-behind'",
        id="write-a-file",
    ),
    pytest.param(
        'open("/proc/1/mem", "rb")',  # the zygote's memory: its sibling calls are forked from it
        "",
        "PermissionError: [Errno 13] Permission denied: '/proc/1/mem'",
        id="zygote-memory",
    ),
]


@pytest.mark.parametrize(("expression", "target", "error"), ESCAPES)
async def test_an_escape_attempt_is_a_tool_error_naming_what_refused_it(
    fabric: Fabric, api: RecordingApi, expression: str, target: str, error: str
) -> None:
    target = target.format(data_dir=fabric.settings.data_dir, api_port=api.url.rsplit(":", 1)[1])
    await fabric.register(AGENT, tries(expression), OK)

    call, last = await run(fabric, target=target)

    assert last == tool_error(call, f"failed: {error.format(target=target)} (line 8)")
    assert api.received == []
    await next_call_succeeds(fabric)


@pytest.mark.parametrize(
    ("expression", "got"),
    [
        # The C library's system(): no process can start, and there is no shell.
        pytest.param('os.system("id")', "32512", id="os-system"),
        # Below Python, the system call itself is refused (seccomp): -1.
        pytest.param(
            'os.sys.modules["builtins"].__import__("ctypes").CDLL(None).socket(2, 1, 0)',
            "-1",
            id="libc-socket",
        ),
    ],
)
async def test_what_reaches_the_system_below_python_does_nothing(
    fabric: Fabric, expression: str, got: str
) -> None:
    await fabric.register(AGENT, tries(expression), OK)

    call, last = await run(fabric)

    assert last == success(call, {"status": "success", "got": got})
    await next_call_succeeds(fabric)


async def test_no_other_network_is_reachable_even_over_a_unix_socket(fabric: Fabric) -> None:
    # An abstract Unix socket lives in a network namespace: the test's is not the jail's.
    name = f"\0midcall-escape-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(name)
        listening.listen()
        await fabric.register(
            AGENT, tries('os.sys.modules["socket"].socket(1, 1).connect(target)'), OK
        )

        call, last = await run(fabric, target=name)

    assert last == tool_error(
        call, "failed: ConnectionRefusedError: [Errno 111] Connection refused (line 8)"
    )
    await next_call_succeeds(fabric)


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    """A variable of the test process, set before the account's jail starts."""
    value = f"canary-{secrets.token_hex(8)}"
    monkeypatch.setenv("MIDCALL_ESCAPE_CANARY", value)
    return value


async def test_the_services_environment_is_not_the_functions(fabric: Fabric, canary: str) -> None:
    await fabric.register(AGENT, attempt("    got = dict(os.environ)"), OK)

    call, last = await run(fabric)

    # LC_CTYPE is the interpreter's own (PEP 538's locale coercion, in an empty environment).
    assert last == success(call, {"status": "success", "got": {"LC_CTYPE": "C.UTF-8"}})
    shown = json.dumps(last)
    # (Short values, a locale's name say, could be there by chance.)
    assert [v for v in os.environ.values() if len(v) > 8 and v in shown] == []
    assert canary not in shown
    await next_call_succeeds(fabric)


FORK_BOMB = """    got = 0
    try:
        while True:
            os.fork()
            got += 1
    except OSError as exc:
        got = [got, repr(exc)]"""


async def test_a_fork_bomb_fails_at_its_first_fork(fabric: Fabric) -> None:
    await fabric.register(AGENT, attempt(FORK_BOMB), OK)

    call, last = await run(fabric)

    stopped = "BlockingIOError(11, 'Resource temporarily unavailable')"
    assert last == success(call, {"status": "success", "got": [0, stopped]})
    await next_call_succeeds(fabric)


# --- resources: memory, time, output -------------------------------------------------------


async def test_a_gigabyte_is_more_memory_than_a_call_may_use(fabric: Fabric) -> None:
    await fabric.register(AGENT, tries("len(bytearray(1 << 30))"), OK)

    call, last = await run(fabric)

    assert last == tool_error(call, "used too much memory and was stopped.", "memory")
    await next_call_succeeds(fabric)


async def test_an_infinite_loop_ends_at_the_calls_deadline(fabric: Fabric) -> None:
    await fabric.register(AGENT, attempt("    while True:\n        pass"), OK)

    _, last = await run(fabric, deadline_ms=1500)

    assert last["error"] == {
        "code": "timeout",
        "message": "The tool service did not answer within 1.5 seconds. "
        "Tell the caller it is taking too long and offer to try again.",
        "details": {"timeout_s": 1.5},
    }
    await next_call_succeeds(fabric)


OVER_CAP = "failed: the function printed or logged more than it may"
CHANNEL = "os.sys.stdout.channel"
RETURNED = len(json.dumps({"status": "success", "got": "x" * 100_000}))


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        pytest.param('    got = print("x" * 100_000_000)', OVER_CAP, id="print-100-mb"),
        pytest.param('    got = os.sys.stdout.write("x" * 100_000)', OVER_CAP, id="sys-stdout"),
        pytest.param('    got = logger.info("x" * 100_000)', OVER_CAP, id="logger"),
        pytest.param(
            '    got = "x" * 100_000',
            f"failed: the function returned {RETURNED} bytes, more than 65536",
            id="returned",
        ),
        # The process's own count is the customer's to change: the code-executor counts again.
        pytest.param(
            f"    {CHANNEL}.output_left = 1 << 40\n"
            "    for _ in range(100):\n"
            '        print("x" * 500_000)\n'
            "    got = None",
            OVER_CAP,
            id="count-reset",
        ),
        pytest.param(
            "    for _ in range(100):\n"
            f'        {CHANNEL}.send({{"op": "log", "level": "info", "message": "x" * 500_000}})\n'
            "    got = None",
            OVER_CAP,
            id="log-frames-forged",
        ),
    ],
)
async def test_too_much_output_is_a_tool_error(
    fabric: Fabric, statements: str, message: str
) -> None:
    await fabric.register(AGENT, attempt(statements), OK)

    call, last = await run(fabric)

    assert last == tool_error(call, message, "output")
    await next_call_succeeds(fabric)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"op": "done", "error": "forged"}, id="not-an-error"),
        pytest.param(
            {"op": "done", "error": {"kind": "sandbox", "message": "the platform is down"}},
            id="the-sandboxs-failure",
        ),
    ],
)
async def test_an_answer_forged_on_the_calls_socket_is_refused(
    fabric: Fabric, answer: dict[str, Any]
) -> None:
    forged = f"    got = {CHANNEL}.send({answer!r})\n    os._exit(0)"
    await fabric.register(AGENT, attempt(forged), OK)

    call, last = await run(fabric)

    assert last == tool_error(call, "failed: the function sent a forged answer", "invalid_result")
    await next_call_succeeds(fabric)


@pytest.mark.parametrize(
    ("ending", "message", "kind"),
    [
        pytest.param(
            "    os._exit(0)",
            "failed: the function's process exited (0) without an answer",
            "crashed",
            id="exit-0",
        ),
        pytest.param(
            "    os._exit(3)",
            "failed: the function's process exited (3) without an answer",
            "crashed",
            id="exit-3",
        ),
        pytest.param(
            "    os.kill(os.getpid(), 11)",
            "failed: the function's process died (SIGSEGV)",
            "crashed",
            id="segfault",
        ),
        pytest.param(
            f'    {CHANNEL}.sock.sendall(b"\\xff" * 64)\n    await asyncio.sleep(60)',
            "failed: the function sent something not a frame",
            "invalid_result",
            id="not-a-frame",
        ),
    ],
)
async def test_a_process_that_ends_without_an_answer_is_a_tool_error_at_once(
    fabric: Fabric, ending: str, message: str, kind: str
) -> None:
    asyncio_reached = "    asyncio = os.sys.modules['asyncio']\n"
    await fabric.register(AGENT, attempt(asyncio_reached + ending + "\n    got = None"), OK)

    call, last = await run(fabric)

    assert last == tool_error(call, message, kind)
    await next_call_succeeds(fabric)


# --- the network: only through the egress, with the destination policy --------------------


@pytest.fixture
async def closed_fabric(nats_url: str, tmp_path: Path) -> AsyncIterator[Fabric]:
    """The fabric as an operator runs it: no private destination allowed (not the test API)."""
    database = f"sqlite:///{tmp_path / 'fabric.db'}"
    running = await start_fabric(nats_url, tmp_path, database, allow_destinations="")
    yield running
    await stop_fabric(running)


async def test_the_metadata_address_is_refused(fabric: Fabric) -> None:
    await fabric.register(AGENT, function(FETCH), OK)

    call, last = await run(fabric, target="http://169.254.169.254/latest/meta-data/")

    assert last == tool_error(call, f"failed: ConnectError: 169.254.169.254 {REFUSED} (line 8)")
    await next_call_succeeds(fabric)


async def test_a_redirect_to_the_metadata_address_is_refused(
    fabric: Fabric, api: RecordingApi
) -> None:
    api.route("GET", "/moved", redirect("http://169.254.169.254/latest/meta-data/"))
    await fabric.register(AGENT, function(FETCH), OK)

    call, last = await run(fabric, target=f"{api.url}/moved")

    assert last == tool_error(call, f"failed: ConnectError: 169.254.169.254 {REFUSED} (line 8)")
    assert [r.path for r in api.received] == ["/moved"]
    await next_call_succeeds(fabric)


def redirect(location: str) -> Any:
    async def handler(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(location)

    return handler


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        pytest.param("127.0.0.1", f"127.0.0.1 {REFUSED}", id="loopback"),
        pytest.param(
            "[::ffff:127.0.0.1]", f"::ffff:127.0.0.1 (::ffff:7f00:1) {REFUSED}", id="ipv4-mapped"
        ),
        pytest.param(
            "localhost", "localhost resolves to 127.0.0.1, which tools may not call", id="a-name"
        ),
        # A number some resolvers read as 127.0.0.1: not a host the egress sends to.
        pytest.param(
            "2130706433",
            "2130706433 could not be reached (InvalidUrlClientError)",
            id="decimal-address",
        ),
    ],
)
async def test_loopback_is_refused_when_the_operator_did_not_allow_it(
    closed_fabric: Fabric, api: RecordingApi, host: str, refused: str
) -> None:
    api.reply("GET", "/cities", json={"name": "Pune"})
    await closed_fabric.register(AGENT, function(FETCH), OK)
    port = api.url.rsplit(":", 1)[1]

    call, last = await run(closed_fabric, target=f"http://{host}:{port}/cities")

    assert last == tool_error(call, f"failed: ConnectError: {refused} (line 8)")
    assert api.received == []
    await next_call_succeeds(closed_fabric)


async def test_a_header_that_would_inject_another_is_refused_at_once(
    fabric: Fabric, api: RecordingApi
) -> None:
    injecting = (
        "    async with httpx.AsyncClient() as client:\n"
        '        response = await client.get(target, headers={"X-Note": "a\\r\\nX-Admin: yes"})\n'
        "    got = response.status_code"
    )
    await fabric.register(AGENT, attempt(injecting), OK)

    _, last = await run(fabric, target=f"{api.url}/cities")

    # The rest is aiohttp's words.
    assert last["error"]["code"] == "tool_error"
    assert last["error"]["details"] == {"kind": "exception"}
    assert last["error"]["message"].startswith(
        "The tool action failed: LocalProtocolError: the request could not be sent: "
    )
    assert api.received == []
    await next_call_succeeds(fabric)


async def test_a_request_frame_the_function_forged_is_answered(
    fabric: Fabric, api: RecordingApi
) -> None:
    forged = f'{CHANNEL}.request({{"method": "GET", "url": target, "headers": 5}}, b"")'
    await fabric.register(AGENT, attempt(f'    got = (await {forged})[0]["message"]'), OK)

    call, last = await run(fabric, target=f"{api.url}/cities")

    answer = "the request's headers are not name-value pairs"
    assert last == success(call, {"status": "success", "got": answer})
    assert api.received == []
    await next_call_succeeds(fabric)


# --- other calls and other accounts --------------------------------------------------------

ACME, GLOBEX = "acme-bot", "globex-bot"
REVEAL = function(
    "async def reveal(ctx: RunContext) -> dict:\n"
    '    """Answers with the account\'s secret."""\n'
    '    return {"status": "success", "value": ctx.secrets["A_ONLY"]}\n',
    "reveal",
    python={"secrets": ["A_ONLY"]},
)
HUNT = function(
    '''async def hunt(ctx: RunContext) -> dict:
    """Looks for another call's secret in every byte of memory it can read."""
    os = REACH_OS
    ctypes = os.sys.modules["builtins"].__import__("ctypes")
    found = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, mode = line.split()[:2]
            if mode.startswith("rw"):
                start, end = [int(address, 16) for address in span.split("-")]
                memory = ctypes.string_at(start, end - start)
                found.update(re.findall(rb"acme-only-[0-9a-f]{16}", memory))
    return {"status": "success", "found": sorted(match.decode() for match in found)}
'''.replace("REACH_OS", REACH_OS),
    "hunt",
)
STASH = function(
    '''async def stash(ctx: RunContext) -> dict:
    """Leaves the account's secret where a later call might look."""
    os = REACH_OS
    json.__dict__["left_behind"] = ctx.secrets["A_ONLY"]
    os.sys.modules["builtins"].left_behind = ctx.secrets["A_ONLY"]
    os.environ["LEFT_BEHIND"] = ctx.secrets["A_ONLY"]
    return {"status": "success"}
'''.replace("REACH_OS", REACH_OS),
    "stash",
    python={"secrets": ["A_ONLY"]},
)
LOOK = function(
    '''async def look(ctx: RunContext) -> dict:
    """Looks where an earlier call might have left something."""
    os = REACH_OS
    builtins = os.sys.modules["builtins"]
    found = [json.__dict__.get("left_behind"), getattr(builtins, "left_behind", None)]
    return {"status": "success", "found": [*found, os.environ.get("LEFT_BEHIND")]}
'''.replace("REACH_OS", REACH_OS),
    "look",
)


@pytest.fixture
async def acme_secret(fabric: Fabric, keys: Keys) -> str:
    """acme's secret ``A_ONLY``; globex, with an agent of its own, has none of that name."""
    value = f"acme-only-{secrets.token_hex(8)}"
    await fabric.set_secret("acme", "A_ONLY", value, headers=keys.acme)
    made = await fabric.registry.put(f"/v1/agents/{GLOBEX}", json={"account_id": "globex"})
    assert made.status_code == 200, made.text
    return value


async def register_as(
    fabric: Fabric, headers: dict[str, str], agent: str, *tools: dict[str, Any]
) -> None:
    posted = await fabric.registry.post(
        f"/v1/agents/{agent}/tools", json={"tools": list(tools)}, headers=headers
    )
    assert posted.status_code == 201, posted.text


async def test_an_accounts_secret_reaches_its_own_functions_only(
    fabric: Fabric, keys: Keys, acme_secret: str
) -> None:
    await register_as(fabric, keys.acme, ACME, REVEAL, OK)
    refused = await fabric.registry.post(
        f"/v1/agents/{GLOBEX}/tools", json={"tools": [REVEAL]}, headers=keys.globex
    )
    # The admin may register it for globex (platform secrets are names only executors know).
    await register_as(fabric, AS_ADMIN, GLOBEX, REVEAL, OK)

    acme_call, acme_result = await run(fabric, "reveal", agent=ACME)
    _, globex_result = await run(fabric, "reveal", agent=GLOBEX)

    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "unknown_secret")
    assert acme_result == success(acme_call, {"status": "success", "value": acme_secret})
    assert globex_result["error"] == {
        "code": "internal",
        "message": "The reveal tool is not set up completely, so it cannot be used right now. "
        "Apologize and offer another way to help.",
        "details": {"missing_secrets": ["A_ONLY"]},
    }
    await next_call_succeeds(fabric, ACME)
    await next_call_succeeds(fabric, GLOBEX)


async def test_another_accounts_calls_leave_nothing_in_memory_a_function_can_read(
    fabric: Fabric, keys: Keys, acme_secret: str
) -> None:
    await register_as(fabric, keys.acme, ACME, REVEAL, OK)
    await register_as(fabric, keys.globex, GLOBEX, HUNT, OK)
    await run(fabric, "reveal", agent=ACME)

    call, last = await run(fabric, "hunt", agent=GLOBEX)

    assert last == success(call, {"status": "success", "found": []})
    await next_call_succeeds(fabric, GLOBEX)


async def test_what_a_call_leaves_behind_is_seen_by_no_later_call(
    fabric: Fabric, keys: Keys, acme_secret: str
) -> None:
    await register_as(fabric, keys.acme, ACME, STASH, LOOK, OK)
    await register_as(fabric, keys.globex, GLOBEX, LOOK, OK)
    stashed, stash_result = await run(fabric, "stash", agent=ACME)

    acme_call, acme_look = await run(fabric, "look", agent=ACME)
    globex_call, globex_look = await run(fabric, "look", agent=GLOBEX)

    assert stash_result == success(stashed, {"status": "success"})
    # Each call is a process of its own, forked from a zygote that never ran a function.
    assert acme_look == success(acme_call, {"status": "success", "found": [None, None, None]})
    assert globex_look == success(globex_call, {"status": "success", "found": [None, None, None]})
    await next_call_succeeds(fabric, ACME)
    await next_call_succeeds(fabric, GLOBEX)


async def test_a_secret_one_call_was_given_is_not_in_a_later_calls_memory(
    fabric: Fabric, keys: Keys, acme_secret: str
) -> None:
    """A call's job goes to its own process alone, never through the zygote that later
    calls' processes are forked from: what one call was given (secrets its tool declares,
    context, variables) is in no later call's memory, whichever tool it runs."""
    await register_as(fabric, keys.acme, ACME, REVEAL, HUNT, OK)
    await run(fabric, "reveal", agent=ACME)

    # The spares waiting then were forked before the job came: one more call than there
    # are spares reaches a process forked after it.
    hunts = [await run(fabric, "hunt", agent=ACME) for _ in range(Jail.spares + 1)]

    assert [last for _, last in hunts] == [
        success(call, {"status": "success", "found": []}) for call, _ in hunts
    ]


async def test_signals_to_the_zygote_leave_the_accounts_other_calls_running(
    fabric: Fabric, api: RecordingApi
) -> None:
    # Given a call of the account waiting on its API ...
    api.reply("GET", "/slow", json={"ok": True}, delay_s=1.0)
    slow = function(FETCH.replace("def tool", "def slow"), "slow")
    killer = attempt(
        "    for signal in (2, 15, 9, 19):\n        os.kill(1, signal)\n    got = None"
    )
    await fabric.register(AGENT, killer, slow, OK)
    waiting = new_call(tool="slow", agent_id=AGENT, arguments={"target": f"{api.url}/slow"})
    await fabric.runtime.listen(waiting["conversation_id"])
    await fabric.runtime.call(waiting)
    await api.wait_for(1)

    # ... when another sends SIGINT, SIGTERM, SIGKILL and SIGSTOP to the zygote (pid 1) ...
    call, last = await run(fabric)
    await fabric.runtime.wait_for(waiting["conversation_id"], "result", waiting["call_id"])

    # ... then the zygote ignores them all, and the first call gets its answer.
    assert last == success(call, {"status": "success", "got": None})
    slow_result = events_of(fabric, waiting)[-1]
    assert slow_result == success(waiting, {"status": "success", "code": 200})
    await next_call_succeeds(fabric)
