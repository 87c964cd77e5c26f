"""Local exchange emulator: the public REST formats ccxt reads, served on 127.0.0.1.

``EmulatorServer`` hosts any number of venues, each under ``/<name>/``:
``GeneratedVenue`` (a deterministic synthetic market in one of ``FORMATS``: ``binanceusdm``,
``bybit``, ``okx``, ``binancecoinm``, ``cryptocom``, ``hyperliquid``, ``kucoinfutures``,
``phemex``; ``venue.ccxt_config`` is what ccxt's constructor needs for it) and ``RecordedVenue``
(byte-for-byte replay of a recorded ``routes.json`` directory). Point
ccxt at a venue with ``perpflow.exchanges.rewrite_api_urls(ex.urls['api'],
server.venue_base_url(name))``. ``python -m perpflow.emulator`` runs one from the command line.
"""

from perpflow.emulator.formats import FORMATS, MALFORMED_KINDS
from perpflow.emulator.generated import GeneratedVenue
from perpflow.emulator.recorded import RecordedVenue
from perpflow.emulator.server import EmulatorServer

__all__ = ["FORMATS", "MALFORMED_KINDS", "EmulatorServer", "GeneratedVenue", "RecordedVenue"]
