"""``python -m perpflow.emulator``: run the exchange emulator until SIGINT/SIGTERM.

Once listening it prints one JSON line to stdout,
``{"base_url": "http://127.0.0.1:8765", "venues": {"bybit": "http://127.0.0.1:8765/bybit", ...}}``,
so that a script can read where each venue is. ``--quirks '{"history_page_cap": 25}'`` gives
every generated venue those ``Quirks`` (JSON object with ``Quirks`` field names),
``--quirks 'bybit={"inverse": true}'`` only the venue named ``bybit`` (repeatable; a venue's own
entry replaces the all-venue one). Exit status 2 for bad arguments (e.g. a host that is not a
loopback address, an unknown quirk or one the venue's format cannot realise), 1 when it cannot
listen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from perpflow.emulator.formats import FORMATS
from perpflow.emulator.generated import GeneratedVenue
from perpflow.emulator.quirks import Quirks
from perpflow.emulator.recorded import RecordedVenue
from perpflow.emulator.server import EmulatorServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m perpflow.emulator",
        description="Local exchange emulator speaking the venues' public REST formats.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument(
        "--venues", default="binanceusdm,bybit,okx",
        help="comma-separated generated venues: FORMAT or NAME=FORMAT (e.g. bybit-1=bybit); "
             f"formats: {', '.join(FORMATS)}; empty for none",
    )
    parser.add_argument("--symbols", type=int, default=300,
                        help="linear USDT perpetuals per generated venue")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated markets")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay added before every answer")
    parser.add_argument("--quirks", action="append", default=[], metavar="[NAME=]JSON",
                        help="Quirks of every generated venue (a JSON object of Quirks fields, "
                             "e.g. '{\"history_page_cap\": 25}'), or of venue NAME only; "
                             "repeatable")
    parser.add_argument("--recorded", nargs="+", default=[], metavar="DIR",
                        help="recorded venue directories (with routes.json), named after the "
                             "directory")
    return parser.parse_args(argv)


def parse_quirks(items: list[str]) -> dict[str | None, Quirks]:
    """``--quirks`` values as ``{venue name or None (every venue): Quirks}``; raises
    ``ValueError`` for bad JSON or an unknown quirk."""
    quirks: dict[str | None, Quirks] = {}
    for item in items:
        name, text = (None, item) if item.lstrip().startswith("{") else item.split("=", 1)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--quirks {item!r}: not a JSON object ({error})") from None
        if not isinstance(data, dict):
            raise ValueError(f"--quirks {item!r}: expected a JSON object")
        quirks[name] = Quirks.from_json(data)
    return quirks


def build_server(args: argparse.Namespace) -> EmulatorServer:
    """The server the arguments describe; raises ``ValueError``/``OSError`` for bad ones."""
    quirks = parse_quirks(args.quirks)
    venues: list = []
    for item in filter(None, (part.strip() for part in args.venues.split(","))):
        name, _, fmt = item.partition("=")
        venues.append(GeneratedVenue(name, fmt or name, symbols=args.symbols, seed=args.seed,
                                     quirks=quirks.get(name, quirks.get(None))))
    unknown = set(quirks) - {None} - {venue.name for venue in venues}
    if unknown:
        raise ValueError(f"--quirks: no generated venue named {sorted(unknown)}")
    venues += [RecordedVenue(directory) for directory in args.recorded]
    server = EmulatorServer(venues, args.host, args.port)
    server.set_latency(args.latency_ms)
    return server


async def serve(server: EmulatorServer) -> None:
    """Start, announce the URLs on stdout, and serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        urls = {name: server.venue_base_url(name) for name in server.venues}
        print(json.dumps({"base_url": server.base_url, "venues": urls}), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        server = build_server(args)
    except (ValueError, OSError) as error:
        print(f"perpflow.emulator: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(server))
    except OSError as error:  # e.g. the port is taken
        print(f"perpflow.emulator: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
