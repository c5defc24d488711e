"""What a work item would do, shown without doing it (``midcall replay --dry-run``): the
request of an HTTP tool, the function call of a python tool.

Rendered by the same pure functions the executor sends with, so what ops
see is what the API would get, except what is only known at send time:
secret values are shown as ``***``, signatures (computed per attempt, with
the time) by name only, and the ``traceparent`` of the trace is left out.
"""

from typing import Any

from pydantic import BaseModel

from shared.calls.binding import declared_arguments
from shared.calls.render import full_url, render_request, secret_names
from shared.contract.events import ExecuteRequest

# What the secrets are rendered as, then shown as ``***`` wherever the request carries
# it: ``***`` itself would be percent-encoded in a host (as %2a%2a%2a).
STAND_IN = "midcall-secret-stand-in"
SIGNED_AT_SEND = "<signed when sent>"
SIGNATURE_HEADERS = {
    "vocode": ("x-vocode-signature",),
    "standard_webhooks": ("webhook-id", "webhook-timestamp", "webhook-signature"),
}


class RequestPreview(BaseModel):
    method: str
    url: str
    headers: dict[str, str]
    body: str | None = None


class FunctionPreview(BaseModel):
    """A python tool's run: its function, the arguments it gets, the secrets it is given
    (names only)."""

    function: str
    arguments: dict[str, Any]
    secrets: list[str]


def preview_function(work: ExecuteRequest) -> FunctionPreview:
    spec = work.tool.python
    if spec is None:
        raise TypeError(f"{work.tool.name} is not a python tool")
    return FunctionPreview(
        function=spec.function,
        arguments=declared_arguments(work.tool, work.call.arguments),
        secrets=sorted(spec.secrets),
    )


def preview(work: ExecuteRequest) -> RequestPreview:
    """Raises ``CallRejected`` where the executor would fail the call before sending."""
    request = render_request(work, dict.fromkeys(secret_names(work), STAND_IN))
    shown = request.hidden.text
    headers = {shown(name): shown(value) for name, value in request.headers.items()}
    signing = work.tool.http().signing
    if signing is not None:
        headers.update(dict.fromkeys(SIGNATURE_HEADERS[signing.scheme], SIGNED_AT_SEND))
    return RequestPreview(
        method=request.method,
        url=shown(str(full_url(request))),
        headers=headers,
        body=None if request.body is None else shown(request.body.decode(errors="replace")),
    )
