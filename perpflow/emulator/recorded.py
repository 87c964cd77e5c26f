"""Recorded venues: replay of real REST bodies listed in a ``routes.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from perpflow.emulator.formats import ERROR_STYLES
from perpflow.emulator.generated import wall_clock_ms
from perpflow.emulator.wire import Reply, text_reply


@dataclass(frozen=True)
class RecordedRoute:
    """One recorded answer: ``method path`` with exactly ``query`` (names in ``ignore_query``
    are disregarded) -> the bytes of ``body``."""

    method: str
    path: str
    query: Mapping[str, str]
    ignore_query: frozenset[str]
    body: bytes

    def matches(self, method: str, path: str, query: Mapping[str, str]) -> bool:
        """True when the request is this route's (query compared exactly, ignored names aside)."""
        if method != self.method or path != self.path:
            return False
        return {k: v for k, v in query.items() if k not in self.ignore_query} == self.query


class RecordedVenue:
    """Serves a directory such as ``shared/realdata-http/bybit/`` byte for byte.

    The directory's ``routes.json`` has ``ccxt_id``, ``ccxt_config`` (extra ccxt constructor
    config the recording needs, exposed as ``ccxt_config``), ``url_overrides`` (ccxt
    ``urls['api']`` entries with ``{base}`` standing for the venue's base URL) and ``routes``:
    ``{method, path, query?, ignore_query?, file}`` with ``file`` relative to the directory. Every
    body is read once, here. A request with no recorded body gets 404, worded in the venue's
    error style when the emulator knows it (``bybit``, ``okx``: JSON that ccxt turns into
    ``ExchangeError``), else as plain text (ccxt: ``ExchangeNotAvailable``). ``name`` (the URL
    prefix) defaults to the directory's name. Raises ``OSError``/``ValueError``/``KeyError`` for a
    missing or malformed ``routes.json`` or body file.
    """

    def __init__(self, directory: str | Path, name: str | None = None) -> None:
        directory = Path(directory)
        spec = json.loads((directory / "routes.json").read_text())
        self.name = name or directory.resolve().name
        self.format: str = spec["ccxt_id"]
        self.ccxt_config: dict = spec.get("ccxt_config", {})
        self.url_overrides: dict[str, str] = spec.get("url_overrides", {})
        self.routes = [
            RecordedRoute(
                method=route.get("method", "GET").upper(),
                path=route["path"],
                query={k: str(v) for k, v in route.get("query", {}).items()},
                ignore_query=frozenset(route.get("ignore_query", ())),
                body=(directory / route["file"]).read_bytes(),
            )
            for route in spec["routes"]
        ]
        self._errors = ERROR_STYLES.get(self.format)

    def handle(
        self, method: str, path: str, query: Mapping[str, str], body: bytes | None = None
    ) -> Reply:
        """The recorded body for the request, else a 404 (recordings are matched by method, path
        and query; a request ``body`` is not part of the match)."""
        for route in self.routes:
            if route.matches(method, path, query):
                return Reply(200, route.body)
        return self.fault_reply(404, path)

    def fault_reply(self, status: int, detail: str = "") -> Reply:
        """An error answer with HTTP ``status`` in the venue's style when known, else plain."""
        if self._errors is None:
            return text_reply(status)
        return self._errors.for_status(status, wall_clock_ms(), detail)
