"""Deterministic synthetic market: instruments, prices and funding, whatever the venue format.

Everything here is a pure function of ``(seed, venue name, instrument, time)``, so two emulators
built with the same arguments answer every request identically, whatever order the requests come
in. Units: prices in quote currency, funding rates as a fraction per funding interval, times in
UTC epoch milliseconds.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
PERPETUAL = "perpetual"
FUTURE = "future"
TRADING = "trading"
PRELAUNCH = "prelaunch"

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
# Value-noise octaves for the price path: knot spacing 1 min * 8**j (1 min .. ~2.8 days).
_OCTAVES = 5
_OCTAVE_PERIODS_MS = tuple(60_000 * 8**j for j in range(_OCTAVES))
_DAILY_VOL = 0.03
_OCTAVE_AMPLITUDES = tuple(_DAILY_VOL * math.sqrt(p / DAY_MS) for p in _OCTAVE_PERIODS_MS)
# Reference price and typical 24h quote volume of the two majors (others are drawn at random).
_MAJORS = {"BTC": (65_000.0, 2.0e10), "ETH": (3_200.0, 1.0e10)}


def mix(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + _GOLDEN) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def unit(key: int, *salts: int) -> float:
    """Uniform float in [0, 1) determined by ``key`` and integer ``salts``."""
    for salt in salts:
        key = mix(key ^ (salt * _GOLDEN & _MASK))
    return mix(key) / 2.0**64


def stable_key(*parts: object) -> int:
    """64-bit key from the text of ``parts`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class InstrumentSpec:
    """A non-default instrument a venue format adds to its list (see ``formats``).

    ``kind`` is ``"perpetual"`` or ``"future"`` (a dated future expiring at the next quarterly
    expiry); ``status`` is ``"trading"`` or ``"prelaunch"``.
    """

    base: str
    quote: str
    settle: str
    kind: str = PERPETUAL
    status: str = TRADING


@dataclass(frozen=True)
class IntervalSchedule:
    """A perpetual's funding interval over time, overriding the drawn one.

    ``hours`` is the interval from the listing on (``None``: keep the drawn interval);
    ``changes`` are ``(at_ms, hours)`` pairs in ascending time: the settlement at ``at_ms`` (UTC
    ms) is the last one on the old interval, the next one comes ``hours`` later, on the UTC grid
    of the new interval (so ``at_ms`` must be a multiple of both intervals). Hours must divide 24.
    Raises ``ValueError`` otherwise.
    """

    hours: int | None = None
    changes: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        for hours in [self.hours] + [h for _, h in self.changes]:
            if hours is not None and (not isinstance(hours, int) or hours < 1 or 24 % hours):
                raise ValueError(f"interval: expected whole hours dividing 24, got {hours!r}")
        times = [at for at, _ in self.changes]
        if times != sorted(set(times)):
            raise ValueError(f"interval changes: expected ascending distinct times, got {times}")


@dataclass(frozen=True)
class Instrument:
    """One generated instrument.

    ``price_decimals`` is the number of decimals of the tick (tick = 10**-price_decimals quote);
    ``interval_h`` is the funding interval in hours at listing (``None`` for dated futures) and
    ``interval_changes`` the ``(at_ms, hours)`` changes after it (see ``IntervalSchedule``; the
    interval in force at a time is ``SyntheticMarket.interval_h_at``); ``listed_ms`` and
    ``expiry_ms`` are UTC ms; ``quote_volume`` is a typical 24h turnover in quote currency;
    ``key`` seeds every random quantity of the instrument (``octave_keys`` are derived from it
    once, for speed, to draw its price path).
    """

    base: str
    quote: str
    settle: str
    kind: str
    status: str
    expiry_ms: int | None
    interval_h: int | None
    listed_ms: int
    ref_price: float
    price_decimals: int
    qty_decimals: int
    quote_volume: float
    key: int
    octave_keys: tuple[int, ...]
    interval_changes: tuple[tuple[int, int], ...] = ()

    @property
    def linear(self) -> bool:
        """True when the contract settles in its quote currency."""
        return self.settle == self.quote

    @property
    def inverse(self) -> bool:
        """True when the contract settles in its base currency."""
        return self.settle == self.base

    @property
    def is_usdt_perpetual(self) -> bool:
        """True for a trading linear USDT-margined perpetual (the bulk of a generated venue)."""
        usdt_margined = self.quote == self.settle == "USDT"
        return self.kind == PERPETUAL and usdt_margined and self.status == TRADING

    @property
    def symbol(self) -> str:
        """ccxt's unified symbol, e.g. ``BTC/USDT:USDT`` or ``BTC/USDT:USDT-260327``."""
        symbol = f"{self.base}/{self.quote}:{self.settle}"
        if self.expiry_ms is not None:
            symbol += "-" + datetime.fromtimestamp(self.expiry_ms / 1000, UTC).strftime("%y%m%d")
        return symbol

    @property
    def interval_ms(self) -> int | None:
        """Funding interval at listing in ms, ``None`` for dated futures."""
        return None if self.interval_h is None else self.interval_h * HOUR_MS

    def segments(self) -> list[tuple[int | None, int | None, int]]:
        """The interval schedule as ``(after_ms, until_ms, step_ms)``: settlements ``t`` with
        ``after_ms < t <= until_ms`` (``None``: unbounded) lie on the UTC grid of ``step_ms``."""
        assert self.interval_h is not None, f"{self.symbol} has no funding"
        bounds = [None] + [at for at, _ in self.interval_changes] + [None]
        hours = [self.interval_h] + [h for _, h in self.interval_changes]
        return [(bounds[i], bounds[i + 1], h * HOUR_MS) for i, h in enumerate(hours)]


def synthetic_base(index: int) -> str:
    """Base currency of the ``index``-th synthetic perpetual: ``C001``, ``C002``, ..."""
    return f"C{index:03d}"


def floor_to(t_ms: int, step_ms: int) -> int:
    """Largest multiple of ``step_ms`` that is <= ``t_ms`` (UTC-aligned grid)."""
    return t_ms - t_ms % step_ms


def next_quarterly_expiry(now_ms: int) -> int:
    """Next quarterly expiry (last Friday of Mar/Jun/Sep/Dec, 08:00 UTC) at least 7 days away."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    year, month = now.year, now.month
    while True:
        if month % 3 == 0:
            next_month = datetime(year + month // 12, month % 12 + 1, 1, 8, tzinfo=UTC)
            last_day = next_month - timedelta(days=1)
            expiry = last_day - timedelta(days=(last_day.weekday() - 4) % 7)
            if expiry - now >= timedelta(days=7):
                return int(expiry.timestamp() * 1000)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


@dataclass(frozen=True)
class Quote:
    """One instrument's market at an instant. Prices in quote currency; ``bid_size``,
    ``ask_size`` and ``base_volume`` in base currency; ``quote_volume`` in quote currency."""

    last: float
    bid: float
    ask: float
    mark: float
    index: float
    open_24h: float
    high_24h: float
    low_24h: float
    base_volume: float
    quote_volume: float
    bid_size: float
    ask_size: float


class SyntheticMarket:
    """The instruments of one generated venue and their deterministic prices and funding.

    ``perpetuals`` linear USDT perpetuals (BTC, ETH, then ``C001``...) come first, then
    ``extras``.
    ``listed_ms`` is when every instrument was listed (its funding history starts at the first
    interval boundary at or after it). ``created_ms`` fixes the expiry of dated futures.
    ``funding_cap`` bounds |funding rate| per interval. ``quote`` is the quote currency of the
    ``perpetuals`` and ``inverse`` makes them settle in their base currency (coin-margined) instead
    of the quote; ``interval_h`` fixes every perpetual's funding interval (hours) instead of
    drawing it (8h mostly, some 4h and 1h); ``with_intervals`` sets schedules with changes, which
    every funding method (settlements, rates, next funding time) follows. Raises ``ValueError``
    for ``perpetuals < 1``.
    """

    def __init__(
        self,
        venue: str,
        perpetuals: int,
        extras: tuple[InstrumentSpec, ...],
        seed: int,
        listed_ms: int,
        created_ms: int,
        funding_cap: float,
        quote: str = "USDT",
        inverse: bool = False,
        interval_h: int | None = None,
    ) -> None:
        if perpetuals < 1:
            raise ValueError(f"symbols: need at least 1 perpetual, got {perpetuals}")
        self.venue = venue
        self.seed = seed
        self.listed_ms = listed_ms
        self.funding_cap = funding_cap
        self.interval_h = interval_h
        bases = ["BTC", "ETH"][:perpetuals] + [synthetic_base(i) for i in range(1, perpetuals - 1)]
        specs = [InstrumentSpec(base, quote, base if inverse else quote) for base in bases]
        specs += extras
        expiry = next_quarterly_expiry(created_ms)
        self.instruments: tuple[Instrument, ...] = tuple(
            self._build(spec, expiry) for spec in specs
        )

    def _build(self, spec: InstrumentSpec, expiry: int) -> Instrument:
        key = stable_key(self.seed, self.venue, spec.base, spec.quote, spec.settle, spec.kind)
        if spec.base in _MAJORS:
            ref_price, volume = _MAJORS[spec.base]
        else:
            ref_price = 10 ** (-3 + 6 * unit(key, 1))
            volume = 10 ** (5 + 4 * unit(key, 2))
        draw = unit(key, 3)
        interval = 8 if spec.base in _MAJORS or draw < 0.75 else (4 if draw < 0.9 else 1)
        interval = self.interval_h or interval
        magnitude = math.floor(math.log10(ref_price))
        return Instrument(
            base=spec.base,
            quote=spec.quote,
            settle=spec.settle,
            kind=spec.kind,
            status=spec.status,
            expiry_ms=expiry if spec.kind == FUTURE else None,
            interval_h=interval if spec.kind == PERPETUAL else None,
            listed_ms=self.listed_ms,
            ref_price=ref_price,
            price_decimals=min(8, max(0, 5 - magnitude)),
            qty_decimals=min(3, max(0, magnitude - 1)),
            quote_volume=volume,
            key=key,
            octave_keys=tuple(
                mix(key ^ octave * _GOLDEN & _MASK) for octave in range(1, _OCTAVES + 1)
            ),
        )

    @staticmethod
    def price(inst: Instrument, t_ms: int) -> float:
        """Last-trade price (quote currency) at ``t_ms``: the reference price times a smooth
        multi-scale noise path (about 3% daily volatility), continuous in time."""
        log_move = 0.0
        for octave_key, period, amplitude in zip(
            inst.octave_keys, _OCTAVE_PERIODS_MS, _OCTAVE_AMPLITUDES
        ):
            knot, rest = divmod(t_ms, period)
            frac = rest / period
            frac = frac * frac * (3.0 - 2.0 * frac)
            # mix() inlined for the two knots around t_ms: this loop is the hot path of tickers.
            left = ((octave_key ^ knot) + _GOLDEN) & _MASK
            right = ((octave_key ^ (knot + 1)) + _GOLDEN) & _MASK
            left = ((left ^ (left >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            right = ((right ^ (right >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            left = ((left ^ (left >> 27)) * 0x94D049BB133111EB) & _MASK
            right = ((right ^ (right >> 27)) * 0x94D049BB133111EB) & _MASK
            left ^= left >> 31
            right ^= right >> 31
            log_move += amplitude * (2.0 * (left + (right - left) * frac) / 2.0**64 - 1.0)
        return inst.ref_price * math.exp(log_move)

    def funding_rate(self, inst: Instrument, settle_ms: int) -> float:
        """Funding rate (fraction per interval) settled at ``settle_ms``, rounded to 1e-8.

        About 40% of settlements pay the venue's default rate (0.01% per 8h, scaled to the
        interval that ends at ``settle_ms``); the rest scatter around it with |rate| mostly
        < 0.0005, with a rare fat tail, always within ``funding_cap``.
        """
        scale = self.interval_h_at(inst, settle_ms) / 8
        default = 0.0001 * scale
        draw = unit(inst.key, 11, settle_ms)
        if draw < 0.4:
            return round(default, 8)
        bias = (unit(inst.key, 12) - 0.4) * 0.0003
        noise = (unit(inst.key, 13, settle_ms) + unit(inst.key, 14, settle_ms) - 1.0) * 0.0004
        if draw > 0.985:
            noise *= 8
        rate = default + (bias + noise) * math.sqrt(scale)
        return round(max(-self.funding_cap, min(self.funding_cap, rate)), 8)

    @staticmethod
    def interval_h_at(inst: Instrument, t_ms: int) -> int:
        """Funding interval (hours) of the period ``(previous settlement, next settlement]`` that
        holds ``t_ms``: for a settlement time, the interval that ends there."""
        assert inst.interval_h is not None, f"{inst.symbol} has no funding"
        hours = inst.interval_h
        for at_ms, new_hours in inst.interval_changes:
            if at_ms < t_ms:
                hours = new_hours
        return hours

    @staticmethod
    def settlement_times(inst: Instrument, lo_ms: int | None, hi_ms: int | None) -> list[range]:
        """Settlement times (UTC ms) from the listing on that lie in ``[lo_ms, hi_ms]`` (``None``:
        unbounded below; ``hi_ms`` must be given, e.g. the clock), one ascending ``range`` per
        interval of the schedule (empty ranges left out)."""
        assert hi_ms is not None, "settlement_times needs an upper bound"
        lo = inst.listed_ms if lo_ms is None else max(lo_ms, inst.listed_ms)
        ranges = []
        for after, until, step in inst.segments():
            first = -(-lo // step) * step
            if after is not None:
                first = max(first, floor_to(after, step) + step)
            last = floor_to(hi_ms if until is None else min(until, hi_ms), step)
            if first <= last:
                ranges.append(range(first, last + 1, step))
        return ranges

    @classmethod
    def settlement_page(
        cls, inst: Instrument, lo_ms: int | None, hi_ms: int, limit: int, oldest_first: bool
    ) -> list[int]:
        """At most ``limit`` settlement times in ``[lo_ms, hi_ms]``, ascending: the oldest ones
        when ``oldest_first`` (a page anchored at its start), else the newest ones."""
        ranges = cls.settlement_times(inst, lo_ms, hi_ms)
        if oldest_first:
            return list(itertools.islice(itertools.chain(*ranges), limit))
        newest: Iterator[int] = itertools.chain(*(reversed(r) for r in reversed(ranges)))
        return list(itertools.islice(newest, limit))[::-1]

    def settlements(
        self, inst: Instrument, lo_ms: int | None, hi_ms: int
    ) -> list[tuple[int, float]]:
        """Ground truth: every ``(settle_ms, rate)`` of ``inst`` in ``[lo_ms, hi_ms]`` (from the
        listing, following the interval schedule), ascending."""
        return [(t, self.funding_rate(inst, t))
                for r in self.settlement_times(inst, lo_ms, hi_ms) for t in r]

    @classmethod
    def first_settlement_ms(cls, inst: Instrument) -> int:
        """First funding settlement: the first interval boundary at or after the listing."""
        return cls.next_funding_ms(inst, inst.listed_ms - 1)

    @classmethod
    def next_funding_ms(cls, inst: Instrument, now_ms: int) -> int:
        """Next settlement strictly after ``now_ms`` on the UTC-aligned grid of the interval then
        in force."""
        step = cls.interval_h_at(inst, now_ms + 1) * HOUR_MS
        return floor_to(now_ms, step) + step

    @classmethod
    def current_interval_h(cls, inst: Instrument, now_ms: int) -> int:
        """The interval (hours) a venue shows now: the one ending at the next settlement."""
        return cls.interval_h_at(inst, cls.next_funding_ms(inst, now_ms))

    @staticmethod
    def last_trade_ms(inst: Instrument, now_ms: int, every_ms: int) -> int:
        """Time of the last trade at or before ``now_ms`` of an instrument that trades once every
        ``every_ms``, at an instrument-specific phase of that grid."""
        phase = int(unit(inst.key, 21) * every_ms)
        return floor_to(now_ms - phase, every_ms) + phase

    def with_intervals(self, schedules: Mapping[int, IntervalSchedule]) -> SyntheticMarket:
        """A copy whose instruments at the given positions follow their ``IntervalSchedule``
        (any format may use it). Raises ``ValueError`` for a dated future, or a change time that
        is not a settlement of both the old and the new interval."""
        instruments = list(self.instruments)
        for position, schedule in schedules.items():
            inst = instruments[position]
            if inst.interval_h is None:
                raise ValueError(f"interval: {inst.symbol} is a dated future without funding")
            hours = schedule.hours or inst.interval_h
            for at_ms, new_hours in schedule.changes:
                if at_ms % (hours * HOUR_MS) or at_ms % (new_hours * HOUR_MS):
                    raise ValueError(f"interval change of {inst.symbol} at {at_ms}: not a "
                                     f"settlement of both {hours}h and {new_hours}h")
                hours = new_hours
            instruments[position] = replace(
                inst, interval_h=schedule.hours or inst.interval_h,
                interval_changes=schedule.changes,
            )
        market = copy.copy(self)
        market.instruments = tuple(instruments)
        return market

    def current_funding_rate(self, inst: Instrument, now_ms: int) -> float:
        """The rate shown now for the upcoming settlement: exactly what will be settled then."""
        return self.funding_rate(inst, self.next_funding_ms(inst, now_ms))

    def quote(self, inst: Instrument, now_ms: int) -> Quote:
        """The market of ``inst`` at ``now_ms``: last, bid and ask on the tick grid with
        bid < ask and bid <= last <= ask, mark and index within a few bp of last, 24h stats."""
        scale = 10**inst.price_decimals
        last = self.price(inst, now_ms)
        last_ticks = max(2, round(last * scale))
        noise = mix(inst.key ^ (now_ms // 1000) * _GOLDEN & _MASK)
        bid_ticks = last_ticks - (noise & 1)
        ask_ticks = bid_ticks + 1 + (noise >> 1 & 1)
        u1, u2, u3, u4 = ((noise >> shift & 0xFFFF) / 65536.0 for shift in (0, 16, 32, 48))
        hourly = mix(inst.key ^ (now_ms // HOUR_MS) * _GOLDEN & _MASK)
        h1, h2, h3 = ((hourly >> shift & 0xFFFF) / 65536.0 for shift in (0, 16, 32))
        last = last_ticks / scale
        open_24h = self.price(inst, now_ms - DAY_MS)
        quote_volume = inst.quote_volume * (0.6 + 0.8 * h3)
        return Quote(
            last=last,
            bid=bid_ticks / scale,
            ask=ask_ticks / scale,
            mark=last * (1 + 0.0004 * (u1 - 0.5)),
            index=last * (1 + 0.0006 * (u2 - 0.5)),
            open_24h=open_24h,
            high_24h=max(open_24h, last) * (1 + 0.03 * h1),
            low_24h=min(open_24h, last) * (1 - 0.03 * h2),
            quote_volume=quote_volume,
            base_volume=quote_volume * 2 / (open_24h + last),
            bid_size=(500 + 50_000 * u3) / last,
            ask_size=(500 + 50_000 * u4) / last,
        )
