"""Funding intervals as data with history: what interval was in force when, learned from the venue
or inferred from settlement times, and where it changed.

A timeline is a list of ``IntervalSpan`` of one instrument, ordered by ``valid_from`` and
non-overlapping (``valid_to`` is the next span's ``valid_from``; the newest span's is None: in
force until further notice). Times are UTC milliseconds; ``hours`` is the funding interval. An
interval never known is absent, never assumed (no 8 h default).

Inference from settlements (``infer_intervals``): the steps between consecutive settlement times
that equal an allowed interval (``ALLOWED_HOURS``) are candidates; other steps (missing
settlements, irregular times) say nothing. The smallest consistent spacing is the interval: a
shorter spacing cannot be explained by missing settlements, so ``CONFIRM_SHORTER`` steps in a row
establish it; a longer one can (every other settlement missing), so it takes ``CONFIRM_LONGER``
steps in a row. A change is recorded from the first settlement at the new spacing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
HOUR_MS = 3_600_000
ALLOWED_HOURS = (1.0, 2.0, 4.0, 8.0)
CONFIRM_SHORTER = 2
CONFIRM_LONGER = 3
VENUE, INFERRED = "venue", "inferred"


@dataclass(frozen=True)
class IntervalSpan:
    """A funding interval of ``hours`` in force from ``valid_from`` (UTC ms, inclusive) to
    ``valid_to`` (UTC ms, exclusive; None: still in force); ``source`` is ``'venue'`` (ccxt's
    funding-rate ``interval`` field) or ``'inferred'`` (from settlement spacing)."""

    valid_from: int
    valid_to: int | None
    hours: float
    source: str


@dataclass(frozen=True)
class Observation:
    """``hours`` known to be in force from ``at`` (UTC ms), learned from ``source``."""

    at: int
    hours: float
    source: str


def hours_at(timeline: list[IntervalSpan], at_ms: int) -> float | None:
    """The interval (hours) in force at ``at_ms`` per ``timeline``, None when unknown then."""
    span = _span_at(timeline, at_ms)
    return None if span is None else span.hours


def _allowed(step_ms: int) -> float | None:
    hours = step_ms / HOUR_MS
    return hours if hours in ALLOWED_HOURS else None


def _span_at(timeline: list[IntervalSpan], at_ms: int) -> IntervalSpan | None:
    for span in reversed(timeline):
        if span.valid_from <= at_ms and (span.valid_to is None or at_ms < span.valid_to):
            return span
    return None


def infer_intervals(
    stamps_ms: list[int], timeline: list[IntervalSpan] | None = None
) -> list[Observation]:
    """The intervals ``stamps_ms`` (sorted, distinct settlement times of one instrument, UTC ms)
    show, as ``Observation``s (``source='inferred'``), judged against ``timeline`` (what is
    already known) as it would read with each earlier observation applied: where nothing is
    known, the first spacing found (from the first settlement of its run); then one per change,
    from the first settlement at the new spacing. Nothing is returned for what is known."""
    working = list(timeline or [])
    found: list[Observation] = []
    running: float | None = None
    steps = [(a, b, _allowed(b - a)) for a, b in zip(stamps_ms, stamps_ms[1:])]
    for i, (previous, settled, hours) in enumerate(steps):
        current = hours_at(working, settled) or running
        if hours is None or hours == current:
            continue
        need = CONFIRM_SHORTER if current is None or hours < current else CONFIRM_LONGER
        run = 1
        while i + run < len(steps) and steps[i + run][2] == hours and run < need:
            run += 1
        if run >= need or (current is None and i + run == len(steps)):
            observation = Observation(previous if current is None else settled, hours, INFERRED)
            found.append(observation)
            working, _ = apply_observations(working, [observation])
            running = hours
    return found


@dataclass(frozen=True)
class Change:
    """The interval of an instrument changed from ``old_hours`` to ``new_hours`` at ``at``
    (UTC ms, the first settlement or observation at the new interval)."""

    at: int
    old_hours: float
    new_hours: float
    source: str


def _merge_equal(timeline: list[IntervalSpan]) -> list[IntervalSpan]:
    merged: list[IntervalSpan] = []
    for span in timeline:
        if merged and merged[-1].hours == span.hours:
            source = VENUE if VENUE in (merged[-1].source, span.source) else INFERRED
            merged[-1] = replace(merged[-1], valid_to=span.valid_to, source=source)
        else:
            merged.append(span)
    return merged


def apply_observations(
    timeline: list[IntervalSpan], observations: list[Observation]
) -> tuple[list[IntervalSpan], list[Change]]:
    """``timeline`` with ``observations`` applied, and the changes they reveal.

    An observation that agrees with the interval in force at its time changes nothing (except
    that an earlier first sighting of a known interval moves its span's start back). One that
    disagrees starts a span at its time, ending the span in force there; a change is reported
    when an interval was known just before it. Settlement times outrank what a venue states: a
    venue observation that contradicts an inferred span in force is ignored (a venue's stated
    interval may be a default; its settlements are what happened). Adjacent spans of equal hours
    are merged.
    """
    spans = sorted(timeline, key=lambda s: s.valid_from)
    changes: list[Change] = []
    for obs in sorted(observations, key=lambda o: o.at):
        in_force = _span_at(spans, obs.at)
        known = None if in_force is None else in_force.hours
        if known == obs.hours:
            continue
        if obs.source == VENUE and in_force is not None and in_force.source == INFERRED:
            continue
        later = [s for s in spans if s.valid_from > obs.at]
        if known is None and later and later[0].hours == obs.hours:
            spans = [s for s in spans if s is not later[0]]
            spans.append(replace(later[0], valid_from=obs.at))
        else:
            end = later[0].valid_from if later else None
            spans = [
                replace(s, valid_to=obs.at)
                if s.valid_from < obs.at and (s.valid_to is None or s.valid_to > obs.at)
                else s
                for s in spans
            ]
            spans = [s for s in spans if s.valid_from != obs.at]
            spans.append(IntervalSpan(obs.at, end, obs.hours, obs.source))
            if known is not None:
                changes.append(Change(obs.at, known, obs.hours, obs.source))
        spans = _merge_equal(sorted(spans, key=lambda s: s.valid_from))
    return spans, changes

