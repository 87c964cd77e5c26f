"""The emulator's aiohttp server: venue routing, faults, latency, request log, control API."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from aiohttp import web

from perpflow.emulator.faults import FaultPlan
from perpflow.emulator.generated import wall_clock_ms
from perpflow.emulator.requestlog import RequestLog, RequestRecord
from perpflow.emulator.wire import Reply

CONTROL_PREFIX = "/_emulator"
THREAD_TIMEOUT_S = 30


class Venue(Protocol):
    """What the server needs of a venue (``GeneratedVenue``, ``RecordedVenue``)."""

    name: str
    format: str
    ccxt_config: dict

    def handle(
        self, method: str, path: str, query: Mapping[str, str], body: bytes | None = None
    ) -> Reply: ...

    def fault_reply(self, status: int, detail: str = "") -> Reply: ...


def loopback_host(host: str) -> str:
    """``host`` as an IP literal if it is a loopback address (``localhost`` -> ``127.0.0.1``);
    raises ``ValueError`` otherwise: the emulator never listens beyond this machine."""
    literal = "127.0.0.1" if host == "localhost" else host
    try:
        loopback = ipaddress.ip_address(literal).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"host: the emulator binds only to loopback addresses, got {host!r}")
    return literal


class EmulatorServer:
    """Serves ``venues`` over HTTP on ``host:port`` (``port=0``: any free port), each under
    ``/<venue name>/...`` so that ccxt with ``rewrite_api_urls(..., venue_base_url(name))``
    reaches it unmodified.

    Use ``await start()``/``await stop()``, ``async with``, or ``with running_in_thread()`` (own
    thread and event loop). ``fail``/``clear_faults``/``set_latency`` inject trouble;
    ``requests`` (a ``RequestLog``) records what was asked. The same controls are served over
    HTTP under ``/_emulator/``: ``GET venues``, ``GET|POST|DELETE faults``, ``POST latency``,
    ``GET|DELETE requests`` (JSON bodies, see ``_control``). Raises ``ValueError`` for a
    non-loopback host or a bad or duplicate venue name.
    """

    def __init__(
        self, venues: Iterable[Venue], host: str = "127.0.0.1", port: int = 0,
        log_size: int = 10_000,
    ) -> None:
        self.host = loopback_host(host)
        self.port = port
        self.venues: dict[str, Venue] = {}
        for venue in venues:
            if not venue.name or "/" in venue.name or venue.name.startswith("_"):
                raise ValueError(f"venue name: expected a URL segment not starting with '_', "
                                 f"got {venue.name!r}")
            if venue.name in self.venues:
                raise ValueError(f"venue name: {venue.name!r} is used twice")
            self.venues[venue.name] = venue
        self.faults = FaultPlan()
        self.requests = RequestLog(log_size)
        self._runner: web.AppRunner | None = None
        self._controls: dict[tuple[str, str], Callable[[web.Request], Awaitable[object]]] = {
            ("GET", "venues"): self._get_venues,
            ("GET", "faults"): self._get_faults,
            ("POST", "faults"): self._post_fault,
            ("DELETE", "faults"): self._delete_faults,
            ("POST", "latency"): self._post_latency,
            ("GET", "requests"): self._get_requests,
            ("DELETE", "requests"): self._delete_requests,
        }

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; afterwards ``port`` and ``base_url`` hold the bound port."""
        app = web.Application()
        app.router.add_route("*", CONTROL_PREFIX + "/{resource}", self._control)
        app.router.add_route("*", "/{venue}/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextmanager
    def running_in_thread(self) -> Iterator[EmulatorServer]:
        """Run the server in a background thread with its own event loop for the ``with`` block
        (for callers in another loop or in synchronous code). The control methods are
        thread-safe."""
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as error:  # reported to the waiting caller
                started.set_exception(error)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.close()

        thread = threading.Thread(target=run, name=f"perpflow-emulator-{id(self)}", daemon=True)
        thread.start()
        started.result(THREAD_TIMEOUT_S)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(THREAD_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(THREAD_TIMEOUT_S)

    # -- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (valid once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def venue_base_url(self, name: str) -> str:
        """The base URL to give ``rewrite_api_urls`` for venue ``name``; ``KeyError`` if
        unknown."""
        return f"{self.base_url}/{self.venues[name].name}"

    def ccxt_config(self, name: str) -> dict:
        """Extra ccxt constructor config venue ``name`` needs (``{}`` for generated venues,
        ``routes.json``'s ``ccxt_config`` for recorded ones); ``KeyError`` if unknown."""
        return self.venues[name].ccxt_config

    # -- controls --------------------------------------------------------------------------

    def fail(
        self, venue: str | None, path: str, status: int = 503, times: int | None = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` requests (``None``: all, until ``clear_faults``) to ``path``
        (without the venue prefix, e.g. ``/v5/market/tickers``) of ``venue`` (``None``: any)
        with HTTP ``status`` and the venue's error body for it; ``retry_after`` (seconds) adds a
        ``Retry-After`` header. Raises ``ValueError`` for an unknown venue or bad argument."""
        if venue is not None and venue not in self.venues:
            raise ValueError(f"venue: no venue {venue!r} on this server")
        self.faults.add(venue, path, status, times, retry_after)

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        self.faults.clear()

    def set_latency(self, ms: float, venue: str | None = None) -> None:
        """Delay every answer of ``venue`` (``None``: all venues without their own setting) by
        ``ms`` milliseconds. Raises ``ValueError`` for an unknown venue or ``ms < 0``."""
        if venue is not None and venue not in self.venues:
            raise ValueError(f"venue: no venue {venue!r} on this server")
        self.faults.set_latency(ms, venue)

    # -- request handling ------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.Response:
        arrived, wall_ms = time.monotonic(), wall_clock_ms()
        name = request.match_info["venue"]
        path = "/" + request.match_info["tail"]
        query = dict(request.query)
        body = await request.read() if request.body_exists else None
        venue = self.venues.get(name)
        if venue is None:
            reply = Reply(404, f"no venue {name!r} on this emulator".encode(), "text/plain")
        else:
            delay = self.faults.latency_ms(name)
            if delay:
                await asyncio.sleep(delay / 1000)
            rule = self.faults.take(name, path)
            if rule is None:
                reply = venue.handle(request.method, path, query, body)
            else:
                reply = venue.fault_reply(rule.status, path)
                if rule.retry_after is not None:
                    reply = Reply(reply.status, reply.body, reply.content_type,
                                  {**reply.headers, "Retry-After": f"{rule.retry_after:g}"})
        self.requests.add(RequestRecord(
            venue=name, method=request.method, path=path, query=query, status=reply.status,
            monotonic=arrived, wall_ms=wall_ms,
            duration_ms=(time.monotonic() - arrived) * 1000,
        ))
        return web.Response(status=reply.status, body=reply.body,
                            content_type=reply.content_type, headers=reply.headers)

    async def _control(self, request: web.Request) -> web.Response:
        """``/_emulator/<resource>``: 200 with a JSON answer, 400 ``{"error": ...}`` for bad
        input, 404 for an unknown resource or method."""
        control = self._controls.get((request.method, request.match_info["resource"]))
        if control is None:
            return web.json_response({"error": "unknown control"}, status=404)
        try:
            return web.json_response(await control(request))
        except (ValueError, KeyError, TypeError) as error:
            return web.json_response({"error": str(error)}, status=400)

    async def _get_venues(self, request: web.Request) -> dict:
        """``{"base_url", "venues": {name: {"format", "base_url", "ccxt_config"}}}``."""
        return {"base_url": self.base_url, "venues": {
            name: {"format": venue.format, "base_url": self.venue_base_url(name),
                   "ccxt_config": venue.ccxt_config}
            for name, venue in self.venues.items()
        }}

    async def _get_faults(self, request: web.Request) -> dict:
        """``{"faults": [rule...], "latency_ms": {venue or "*": ms}}``."""
        return {"faults": [rule.to_json() for rule in self.faults.rules()],
                "latency_ms": self.faults.latencies()}

    async def _post_fault(self, request: web.Request) -> dict:
        """Body ``{"venue": name|null, "path": "/...", "status": 503, "times": 1|null,
        "retry_after": seconds|null}`` -> like ``GET faults``."""
        body = await request.json()
        self.fail(body.get("venue"), body["path"], int(body.get("status", 503)),
                  body.get("times", 1), body.get("retry_after"))
        return await self._get_faults(request)

    async def _delete_faults(self, request: web.Request) -> dict:
        self.clear_faults()
        return await self._get_faults(request)

    async def _post_latency(self, request: web.Request) -> dict:
        """Body ``{"ms": 50, "venue": name|null}`` -> like ``GET faults``."""
        body = await request.json()
        self.set_latency(float(body["ms"]), body.get("venue"))
        return await self._get_faults(request)

    async def _get_requests(self, request: web.Request) -> dict:
        """Query ``venue``, ``limit`` -> ``{"requests": [record...], "counts": [{"venue",
        "path", "count"}...]}``."""
        limit = request.query.get("limit")
        records = self.requests.records(request.query.get("venue"), int(limit) if limit else None)
        return {
            "requests": [record.to_json() for record in records],
            "counts": [{"venue": venue, "path": path, "count": count}
                       for (venue, path), count in self.requests.counts().items()],
        }

    async def _delete_requests(self, request: web.Request) -> dict:
        self.requests.clear()
        return {"requests": [], "counts": []}
