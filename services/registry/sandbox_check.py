"""Whether python tools can run, asked of a code-executor before one is accepted.

A python tool is only ever run in the code-executor's sandbox. Where that
cannot start (no namespaces, a container without the capability), or no
code-executor runs at all, a python tool is refused when it is posted, with
the reason, rather than accepted and failed on every call.
"""

import json
from collections.abc import Iterable

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from shared.contract import subjects
from shared.contract.tools import Tool
from shared.process.http_api import ApiError

# A jail's first start is checked then: about 150 ms, seconds on a loaded machine.
ASK_TIMEOUT_S = 5.0


class SandboxCheck:
    def __init__(self, client: Client, timeout_s: float = ASK_TIMEOUT_S) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def require(self, tools: Iterable[Tool], account_id: str) -> None:
        """Raise a 503 if any of ``tools`` is a python tool and none can run here; the
        code-executor that answers starts the account's jail, warm for the first call."""
        if not any(tool.kind == "python" for tool in tools):
            return
        reason = await self.refusal(account_id)
        if reason is not None:
            raise ApiError(
                503,
                "sandbox_unavailable",
                f"Python tools cannot run here: {reason}. They are refused rather than run "
                "without their sandbox; HTTP tools are not affected.",
            )

    async def refusal(self, account_id: str) -> str | None:
        """Why no python tool of the account can run now, or None."""
        asked = json.dumps({"account_id": account_id}).encode()
        try:
            answer = await self._client.request(
                subjects.SANDBOX_STATUS, asked, timeout=self._timeout_s
            )
        except NoRespondersError:
            return "no code-executor is running"
        except NatsTimeout:
            return f"no code-executor answered within {self._timeout_s:g} s"
        try:
            status = json.loads(answer.data)
        except ValueError:
            return "the code-executor's answer could not be read"
        if isinstance(status, dict) and status.get("available") is True:
            return None
        reason = status.get("reason") if isinstance(status, dict) else None
        return str(reason or "the code-executor's sandbox does not start")
