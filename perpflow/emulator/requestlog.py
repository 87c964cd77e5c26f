"""Bounded, thread-safe log of the requests the emulator answered."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass

MAX_COUNTED_ROUTES = 10_000


@dataclass(frozen=True)
class RequestRecord:
    """One answered request: ``path`` without the venue prefix, the final HTTP ``status``,
    ``monotonic`` (``time.monotonic()`` seconds, when the request arrived) and ``wall_ms``
    (UTC epoch ms, idem), ``duration_ms`` (until the answer was ready, latency included)."""

    venue: str
    method: str
    path: str
    query: dict[str, str]
    status: int
    monotonic: float
    wall_ms: int
    duration_ms: float

    def to_json(self) -> dict:
        """The record as a JSON-able dict (the control API's shape)."""
        return asdict(self)


class RequestLog:
    """The last ``maxlen`` requests, plus counts per ``(venue, path)`` since the last ``clear``
    (at most ``MAX_COUNTED_ROUTES`` distinct pairs are counted, so memory stays bounded)."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=maxlen)
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, record: RequestRecord) -> None:
        """Append a record and count it."""
        key = (record.venue, record.path)
        with self._lock:
            self._records.append(record)
            if key in self._counts or len(self._counts) < MAX_COUNTED_ROUTES:
                self._counts[key] += 1

    def records(self, venue: str | None = None, limit: int | None = None) -> list[RequestRecord]:
        """The kept records, oldest first, optionally of one venue and only the last ``limit``."""
        with self._lock:
            records = [r for r in self._records if venue is None or r.venue == venue]
        return records[-limit:] if limit else records

    def count(self, venue: str, path: str) -> int:
        """How many requests ``venue`` got on ``path`` since the last ``clear``."""
        with self._lock:
            return self._counts[(venue, path)]

    def counts(self) -> dict[tuple[str, str], int]:
        """Requests per ``(venue, path)`` since the last ``clear``."""
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        """Forget records and counts."""
        with self._lock:
            self._records.clear()
            self._counts.clear()
