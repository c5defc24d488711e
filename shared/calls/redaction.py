"""Keeping a call's secret values out of what the executor writes: errors, logs, spans,
metrics, and the API's answer when it echoes one.

Errors name a template rather than the text it rendered to where a secret may
be in it (``render``, the executor's ``tool_hosts``,
``shared.security.destinations``); this is the net under that. Any of the
call's secret values found, as written or percent-encoded as a URL carries
it, becomes ``***``, whatever the case: URL hosts are lowercased on the way,
by yarl and by ``urlsplit``. A value shorter than ``SHORTEST`` is left: a
one-letter secret would turn every word with that letter into stars, and a
value that short keeps nothing secret anyway.
"""

import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from opentelemetry.trace import Span, Status, StatusCode

from shared.contract.errors import CallRejected
from shared.contract.events import HttpResponse
from shared.fabric.consumer import LeaseLost

REDACTED = "***"
SHORTEST = 4


class RedactedError(Exception):
    """An unexpected failure whose text held a secret: its traceback and causes, told hidden."""


@dataclass(frozen=True)
class Redaction:
    """The secret values one call has in hand."""

    values: tuple[str, ...] = ()

    def text(self, text: str) -> str:
        """``text`` with each value, as written or percent-encoded, in any case, as ``***``."""
        forms = {
            form
            for value in self.values
            if len(value) >= SHORTEST
            for form in (value, quote(value, safe=""))
        }
        if not forms:
            return text
        longest_first = sorted(forms, key=len, reverse=True)
        pattern = "|".join(re.escape(form) for form in longest_first)
        return re.sub(pattern, REDACTED, text, flags=re.IGNORECASE)

    def failure(self, failure: CallRejected) -> CallRejected:
        """``failure`` with the values hidden in its message and details (keys too)."""
        return CallRejected(failure.code, self.text(failure.message), self._value(failure.details))

    def response(self, response: HttpResponse) -> HttpResponse:
        """``response`` with the values hidden in its body."""
        body = self.text(response.body)
        return response if body == response.body else response.model_copy(update={"body": body})

    @contextmanager
    def hiding(self) -> Iterator[None]:
        """Exceptions leave with the secrets in their text (their causes' too) hidden."""
        try:
            yield
        except LeaseLost:
            raise  # not a failure to report: the consumer leaves the message to its new holder
        except Exception as exc:
            told = "".join(traceback.format_exception(exc))
            hidden = self.text(told)
            if hidden == told:
                raise
            raise RedactedError(hidden) from None  # its causes would tell them unhidden

    def record(self, span: Span, exc: Exception) -> None:
        """Record ``exc`` on ``span`` as OpenTelemetry would on leaving it, its texts hidden."""
        message = self.text(str(exc))
        span.record_exception(
            exc,
            {
                "exception.message": message,
                "exception.stacktrace": self.text("".join(traceback.format_exception(exc))),
            },
        )
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self._value(key): self._value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(item) for item in value]
        return value
