"""Whether and when a failed attempt is tried again. Pure.

The tool's policy says how many attempts and on which failures; HTTP's
semantics and the call's deadline narrow it:

- 429, 502, 503 and 504 are the statuses worth another try (500 is usually
  a fault that repeats);
- a request that may have reached the API is repeated only if its method is
  idempotent, or the tool opts in (``retry.non_idempotent``); a POST whose
  connection was refused is safe to send again;
- ``Retry-After`` is honoured, and no attempt is started that the deadline
  leaves no time to finish (judged by how long the last one took).
"""

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from shared.contract.tools import RetryPolicy

IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
RETRYABLE_STATUSES = {429: "http_429", 502: "http_5xx", 503: "http_5xx", 504: "http_5xx"}
# An attempt is assumed to need at least this long, however fast the last one failed.
MIN_ATTEMPT_S = 0.05


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to, as far as trying again is concerned."""

    number: int
    reason: str | None  # a ``retry.on`` value, or None for an answer not worth retrying
    sent: bool  # whether the request may have reached the API
    took_s: float
    retry_after_s: float | None = None


def status_reason(status: int) -> str | None:
    return RETRYABLE_STATUSES.get(status)


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds()) if when.tzinfo else None


def retry_delay(
    policy: RetryPolicy, method: str, last: Attempt, remaining_s: float, jitter: float
) -> float | None:
    """Seconds to wait before the next attempt, or None when there is none."""
    if last.reason is None or last.reason not in policy.on or last.number >= policy.attempts:
        return None
    if last.sent and method not in IDEMPOTENT_METHODS and not policy.non_idempotent:
        return None
    # Exponential with jitter, so replicas retrying one API do not stampede it.
    delay = float(policy.backoff_s * 2 ** (last.number - 1) * jitter)
    if last.retry_after_s is not None:
        delay = max(delay, last.retry_after_s)
    if remaining_s - delay < max(last.took_s, MIN_ATTEMPT_S):
        return None
    return delay
