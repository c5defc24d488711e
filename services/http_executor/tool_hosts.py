"""Where a tool itself says it may send: its ``allowed_hosts``. Pure: no I/O.

The registry refuses a tool whose host comes from the LLM's arguments and
that sends secrets or signs without listing ``allowed_hosts``; these checks
hold the same line for every work item (tools stored before that rule, a
replay of an old definition), before any secret is opened and after the URL
is rendered. The operator's destination policy
(``shared.security.destinations``) applies on top.
"""

from yarl import URL

from shared.calls.render import RenderedRequest
from shared.contract.errors import CallRejected, ErrorCode
from shared.contract.events import ExecuteRequest

NOT_ALLOWED = (
    "This tool was asked to call a place it is not allowed to. Tell the caller "
    "the action is not available right now."
)


def check_chosen_host(work: ExecuteRequest) -> None:
    """Refuse sending secrets (or a signature) to a host the LLM picked, unbounded."""
    spec = work.tool.http()
    if spec.allowed_hosts is None and spec.host_from_input() and spec.sends_secrets():
        raise CallRejected(
            ErrorCode.BLOCKED_DESTINATION,
            NOT_ALLOWED,
            {"reason": "the host comes from the arguments and the tool lists no allowed_hosts"},
        )


def check_allowed_host(work: ExecuteRequest, request: RenderedRequest) -> None:
    """Refuse a rendered URL whose host is not among the tool's ``allowed_hosts``."""
    spec = work.tool.http()
    if spec.allowed_hosts is None:
        return
    host = _host(request.url)
    if not spec.allows_host(host):
        raise CallRejected(
            ErrorCode.BLOCKED_DESTINATION,
            NOT_ALLOWED,
            {"host": request.secret_host or host, "allowed_hosts": spec.allowed_hosts},
        )


def _host(url: str) -> str | None:
    # Parsed as the sender parses it (yarl), so the host checked is the host called.
    try:
        return URL(url).host
    except ValueError:
        return None
