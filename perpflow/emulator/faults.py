"""Injected failures and latency, shared by the server's Python API and its HTTP control API."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass
class FaultRule:
    """Fail requests to ``path`` (without the venue prefix) of ``venue`` (``None``: any venue)
    with HTTP ``status``; ``remaining`` more times (``None``: until cleared). 429/503 answers
    carry ``Retry-After: retry_after`` (seconds) when it is set."""

    venue: str | None
    path: str
    status: int
    remaining: int | None
    retry_after: float | None = None

    def to_json(self) -> dict:
        """The rule as a JSON-able dict (the control API's shape)."""
        return asdict(self)


class FaultPlan:
    """Thread-safe set of ``FaultRule``s (first matching rule wins) and per-venue latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._latency_ms: dict[str | None, float] = {}

    def add(
        self, venue: str | None, path: str, status: int = 503, times: int | None = 1,
        retry_after: float | None = None,
    ) -> FaultRule:
        """Add a rule; raises ``ValueError`` for a status outside 400-599, ``times < 1`` or a path
        not starting with ``/``."""
        if not 400 <= status <= 599:
            raise ValueError(f"status: expected an HTTP error status 400-599, got {status!r}")
        if times is not None and times < 1:
            raise ValueError(f"times: expected >= 1 or None (until cleared), got {times!r}")
        if not path.startswith("/"):
            raise ValueError(f"path: expected a path starting with '/', got {path!r}")
        rule = FaultRule(venue, path, status, times, retry_after)
        with self._lock:
            self._rules.append(rule)
        return rule

    def take(self, venue: str, path: str) -> FaultRule | None:
        """The rule that fails this request, counting it down (and dropping it when spent)."""
        with self._lock:
            for rule in self._rules:
                if rule.path == path and rule.venue in (None, venue):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining == 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def rules(self) -> list[FaultRule]:
        """A copy of the pending rules."""
        with self._lock:
            return [FaultRule(**asdict(rule)) for rule in self._rules]

    def clear(self) -> None:
        """Drop every rule (latency settings stay)."""
        with self._lock:
            self._rules.clear()

    def set_latency(self, ms: float, venue: str | None = None) -> None:
        """Delay every answer of ``venue`` (``None``: the default for all venues) by ``ms``
        milliseconds; a venue's own setting wins over the default. Raises ``ValueError`` for
        ``ms < 0``."""
        if ms < 0:
            raise ValueError(f"latency: expected ms >= 0, got {ms!r}")
        with self._lock:
            self._latency_ms[venue] = float(ms)

    def latency_ms(self, venue: str) -> float:
        """The delay (ms) applied before answering a request to ``venue``."""
        with self._lock:
            return self._latency_ms.get(venue, self._latency_ms.get(None, 0.0))

    def latencies(self) -> dict[str, float]:
        """Latency settings; the default for all venues under the key ``"*"``."""
        with self._lock:
            return {("*" if venue is None else venue): ms for venue, ms in self._latency_ms.items()}
