"""The request a work item would send, shown without sending it (``midcall replay --dry-run``).

Rendered by the same pure functions the executor sends with, so what ops
see is what the API would get, except what is only known at send time:
secret values are shown as ``***``, signatures (computed per attempt, with
the time) by name only, and the ``traceparent`` of the trace is left out.
"""

from pydantic import BaseModel

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
