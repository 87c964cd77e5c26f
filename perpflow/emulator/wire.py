"""What the venues share on the wire: replies, error styles, number formatting, history windows."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, raw body bytes, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(payload: object, status: int = 200) -> Reply:
    """A compact JSON body (no spaces, as the venues send)."""
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


def text_reply(status: int, text: str | None = None) -> Reply:
    """A plain-text body, by default the HTTP reason phrase (``Service Unavailable``)."""
    return Reply(status, (text or HTTPStatus(status).phrase).encode(), "text/plain")


class VenueError(Exception):
    """A request the venue rejects: ``kind`` is a key of ``ErrorStyle.kinds`` (``bad_symbol``,
    ``bad_param``, ``not_found``...), ``detail`` fills the ``{}`` of its message."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# HTTP statuses an injected fault may carry that have a venue-specific body.
STATUS_KINDS = {404: "not_found", 418: "rate_limited", 429: "rate_limited", 503: "unavailable"}


@dataclass(frozen=True)
class ErrorStyle:
    """How one venue words its errors.

    ``kinds`` maps an error kind to ``(default HTTP status, venue error code, message)``; a code of
    ``None`` means the venue answers that error with a plain-text body (e.g. Binance's
    ``Service Unavailable.``). ``envelope(code, message, now_ms)`` builds the JSON error body.
    """

    envelope: Callable[[int, str, int], dict]
    kinds: Mapping[str, tuple[int, int | None, str]]

    def reply(self, kind: str, now_ms: int, status: int | None = None, detail: str = "") -> Reply:
        """The venue's answer to an error of ``kind`` (``status`` overrides its default)."""
        default_status, code, message = self.kinds[kind]
        status = status or default_status
        message = message.format(detail)
        if code is None:
            return text_reply(status, message)
        return json_reply(self.envelope(code, message, now_ms), status)

    def for_status(self, status: int, now_ms: int, detail: str = "") -> Reply:
        """The body an error with HTTP ``status`` gets (an injected fault, a missing recording):
        the venue's own wording for 404, 418, 429 and 503, the plain reason phrase otherwise."""
        kind = STATUS_KINDS.get(status)
        if kind is None:
            return text_reply(status)
        return self.reply(kind, now_ms, status, detail)


def fixed(value: float, decimals: int) -> str:
    """``value`` with exactly ``decimals`` decimals (``"65000.10"``), as Binance and Bybit print."""
    return f"{value:.{decimals}f}"


def trimmed(value: float, decimals: int = 8) -> str:
    """``value`` rounded to ``decimals`` without trailing zeros (``"0.0001"``), as OKX prints."""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def int_param(query: Mapping[str, str], name: str) -> int | None:
    """Integer query parameter ``name`` or ``None``; raises ``VenueError('bad_param')`` if it is
    not an integer."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise VenueError("bad_param", name) from None


def page_limit(query: Mapping[str, str], default: int, cap: int) -> int:
    """The ``limit`` query parameter, ``default`` when absent, clamped to ``[1, cap]`` (the
    venue's page cap)."""
    limit = int_param(query, "limit")
    return default if limit is None else max(1, min(cap, limit))


def history_window(
    first_ms: int, step_ms: int, last_ms: int, lo_ms: int | None, hi_ms: int | None,
    limit: int, oldest_first: bool,
) -> range:
    """Settlement times of the grid ``first_ms, first_ms + step_ms, ... <= last_ms`` that lie in
    the inclusive window ``[lo_ms, hi_ms]`` (open ends when ``None``), at most ``limit`` of them:
    the oldest ones when ``oldest_first`` (pages anchored at the start, as Binance does), else the
    newest ones (anchored at the end, as Bybit and OKX do). Returned ascending."""
    lo_index = 0 if lo_ms is None else max(0, -(-(lo_ms - first_ms) // step_ms))
    top = last_ms if hi_ms is None else min(last_ms, hi_ms)
    hi_index = (top - first_ms) // step_ms
    if hi_index - lo_index + 1 > limit:
        if oldest_first:
            hi_index = lo_index + limit - 1
        else:
            lo_index = hi_index - limit + 1
    return range(first_ms + lo_index * step_ms, first_ms + (hi_index + 1) * step_ms, step_ms)
