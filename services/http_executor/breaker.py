"""A circuit breaker per destination host: a host that keeps failing gets a rest.

After ``threshold`` failures in a row (no connection, a timeout, 502/503/504)
calls to the host fail fast for ``cool_down_s``, with words the caller can
hear at once instead of a long silence; then one call probes it, and its
outcome closes the circuit or opens it again. State is per executor process.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.observability.metrics import BREAKER_OPEN


@dataclass
class _Circuit:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


class Breakers:
    def __init__(
        self,
        threshold: int = 5,
        cool_down_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cool_down_s = cool_down_s
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def allow(self, host: str) -> bool:
        """Whether a call to ``host`` may go out now (at most one probe while it recovers)."""
        circuit = self._circuits.get(host)
        if circuit is None or circuit.failures < self.threshold:
            return True
        if circuit.probing or self._clock() < circuit.open_until:
            return False
        circuit.probing = True
        return True

    def record(self, host: str, healthy: bool, shown: str | None = None) -> None:
        """``shown``: the host as the metric may name it (its secrets hidden); ``host`` if None."""
        label = host if shown is None else shown
        if healthy:
            if self._circuits.pop(host, None) is not None:
                BREAKER_OPEN.labels(label).set(0)
            return
        circuit = self._circuits.setdefault(host, _Circuit())
        circuit.failures += 1
        circuit.probing = False
        if circuit.failures >= self.threshold:
            circuit.open_until = self._clock() + self.cool_down_s
            BREAKER_OPEN.labels(label).set(1)
