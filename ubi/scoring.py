"""Usage-based-insurance (UBI) driving scores per trip and per period, explained and stable.

Pure functions over :class:`ubi.trips.Trip` and :class:`ubi.events.DrivingEvent` objects: no
database, no I/O. Parameters are :class:`ScoreParams`; every result carries
:data:`SCORE_VERSION`, so a stored score can always be traced to the formulas below.

**Sub-scores** (0-100, higher is safer). Over the scored trips, with ``D`` the distance in km:

* harsh braking / acceleration / cornering: the *severity-weighted* event count
  ``W = sum(severity)`` (a severity 1 event counts 1, severity 2 counts 2, severity 3 counts 3),
  the rate ``r = 100 * W / D`` per 100 km and ``S = 100 * exp(-r / c)`` with the type's scale
  ``c`` (:attr:`ScoreParams.braking_scale` ...): one severity-1 brake in exactly 100 km gives
  ``100 * exp(-1 / 5) = 81.87``;
* speeding: the share ``p = sum(speeding_s) / sum(moving_s)`` of moving time above the limit,
  ``S = 100 * exp(-p / c_speeding)``;
* night: the share ``p = sum(night_s) / sum(duration_s)`` of trip time in [23:00, 05:00)
  local time, ``S = 100 * exp(-p / c_night)``.

Sums are over trips, so long trips weigh more than short ones (a per-km rate, not a mean of
per-trip rates). No events, no speeding and no night driving give 100 in every sub-score.

**Score.** ``raw = sum(w_j * S_j)`` with the sub-score weights (they sum to 1). The score is
credibility-weighted towards the fleet prior ``P`` (:attr:`ScoreParams.prior_score`, 75, the
score of a typical fleet driver)::

    Z = D / (D + K)          (K = 500 km: half credibility after 500 km)
    score = Z * raw + (1 - Z) * P

so a few kilometres cannot move a driver far from the fleet, and the score settles as
kilometres accumulate instead of jumping with every trip. With no distance ``Z = 0`` and the
score is the prior; ``raw``, the sub-scores, the rates and the shares are then ``None`` (less
than :data:`MIN_RATED_KM`, the odometer's 1 m resolution, counts as no distance).

**Uncertainty interval** (:attr:`ScoreParams.confidence`, 95 %), by linear error
propagation (delta method):

1. Event counts are compound Poisson: ``Var(W) = sum(severity^2) + 1``. The ``+ 1`` is one
   severity-1 pseudo-event, so that a driver with no event yet is not "known" to have rate 0
   (a count of 0 is as compatible with an expected count of 1). ``Var(r) = (100 / D)^2 Var(W)``
   and ``Var(S) = (S / c)^2 Var(r)`` since ``dS/dr = -S / c``.
2. A time share ``p`` over ``T`` seconds is a binomial proportion over ``n = T / (60 b)``
   blocks of ``b`` = :attr:`ScoreParams.share_block_minutes` (10 min: speeding and night
   driving come in stretches, so single seconds are far from independent):
   ``Var(p) = q (1 - q) / (n + 1)`` with ``q = (n p + 1/2) / (n + 1)`` (again a half pseudo
   observation so that ``p = 0`` keeps some uncertainty), and ``Var(S) = (S / c)^2 Var(p)``.
3. Sub-scores are treated as independent: ``Var(raw) = sum(w_j^2 Var(S_j))``.
4. The prior is uncertain by the fleet spread ``sigma_P`` (:attr:`ScoreParams.prior_sd`, 12
   points): ``Var(score) = Z^2 Var(raw) + (1 - Z)^2 sigma_P^2``.
5. ``half_width = z * sqrt(Var(score))`` (``z`` = 1.96 at 95 %) and the interval is
   ``[max(0, score - half_width), min(100, score + half_width)]``.

At fixed rates ``Var(raw) ~ a / D + b / D^2``, so ``Var(score) ~ (a D + b + K^2 sigma_P^2) /
(D + K)^2``, which falls with ``D`` whenever ``a <= 2 K sigma_P^2``. With the default
parameters ``a`` stays below a third of that bound for any rates and any speed up to 130 km/h,
so the interval shrinks as exposure grows. With ``D = 0`` it is the prior's interval
(75 ± 23.5).

**Reason codes.** Each sub-score ``j`` costs ``Z * w_j * (100 - S_j)`` points of the final
score (the rest of ``100 - score`` is ``(1 - Z) * (100 - P)``, the prior's share). The top
three by points lost, above zero, are reported with a code (``HARSH_BRAKING``,
``HARSH_ACCELERATION``, ``HARSH_CORNERING``, ``SPEEDING``, ``NIGHT_DRIVING``) and a sentence;
ties keep that code order.

**Sufficiency.** A score is ``data_sufficient`` with at least
:attr:`ScoreParams.min_distance_km` (100 km), :attr:`ScoreParams.min_trips` (5) and
:attr:`ScoreParams.min_hours` (2 h of trip time); otherwise ``insufficient_reasons`` lists
``INSUFFICIENT_DISTANCE``, ``INSUFFICIENT_TRIPS`` and/or ``INSUFFICIENT_DRIVING_TIME``. A single
trip is therefore never sufficient with the defaults: a trip score is feedback for the driver,
not a price.

**Event assignment.** An event belongs to the trip of the same VIN whose
``[start_ms, end_ms]`` (both ends included) contains the event's start; if trips overlap, to
the earliest-starting one. Events outside every trip are not scored; a period reports how many
of its VIN's events started within the period but outside every trip given
(``unassigned_events``, a segmentation or detection quality signal).

**Reproducibility.** Inputs are deduplicated and sorted internally and sums use
:func:`math.fsum` (exactly rounded, so independent of order); outputs are rounded (scores and
points to 2 decimals, rates to 3, shares and ``Z`` to 4). The same trips and events in any
order give bit-identical results.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from statistics import NormalDist
from typing import Any

from ubi.events import DrivingEvent, EventType
from ubi.trips import Trip

__all__ = [
    "SCORE_VERSION",
    "PeriodScore",
    "ReasonCode",
    "Score",
    "ScoreParams",
    "SubScore",
    "TripScore",
    "assign_events",
    "score_period",
    "score_trip",
]

SCORE_VERSION = "ubi-1.0"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class SubScore(StrEnum):
    BRAKING = "braking"
    ACCELERATION = "acceleration"
    CORNERING = "cornering"
    SPEEDING = "speeding"
    NIGHT = "night"


EVENT_SUB_SCORES: Mapping[EventType, SubScore] = {
    EventType.HARSH_BRAKING: SubScore.BRAKING,
    EventType.HARSH_ACCELERATION: SubScore.ACCELERATION,
    EventType.HARSH_CORNERING: SubScore.CORNERING,
}
REASON_CODES: Mapping[SubScore, str] = {
    SubScore.BRAKING: "HARSH_BRAKING",
    SubScore.ACCELERATION: "HARSH_ACCELERATION",
    SubScore.CORNERING: "HARSH_CORNERING",
    SubScore.SPEEDING: "SPEEDING",
    SubScore.NIGHT: "NIGHT_DRIVING",
}
SEVERITIES = (1, 2, 3)
"""Valid event severities; an event counts its severity (1, 2 or 3) in the weighted count."""
MAX_REASONS = 3
MIN_RATED_KM = 0.001
"""Less distance than this (the odometer's 1 m resolution) counts as none: no rates."""


@dataclass(frozen=True)
class ScoreParams:
    braking_scale: float = 5.0
    """Severity-weighted harsh-braking events per 100 km at which the sub-score is 100/e
    (36.8); a typical fleet driver has about 1.5 (sub-score ~74)."""
    acceleration_scale: float = 3.0
    """As ``braking_scale`` for harsh accelerations (rarer: the threshold is higher)."""
    cornering_scale: float = 3.0
    """As ``braking_scale`` for harsh cornering."""
    speeding_scale: float = 0.10
    """Share of moving time above the limit at which the sub-score is 36.8. The default limit
    is the 130 km/h fallback (``ubi/trips.py``), so this counts gross speeding only."""
    night_scale: float = 0.20
    """Share of trip time in [23:00, 05:00) local at which the sub-score is 36.8."""
    braking_weight: float = 0.30
    acceleration_weight: float = 0.20
    cornering_weight: float = 0.15
    speeding_weight: float = 0.20
    night_weight: float = 0.15
    """Sub-score weights of the raw score; they must sum to 1."""
    credibility_km: float = 500.0
    """``K``: the distance at which the driver's own data and the prior weigh equally."""
    prior_score: float = 75.0
    """``P``: the score of a typical fleet driver, what we assume before seeing any driving."""
    prior_sd: float = 12.0
    """``sigma_P``: the spread (standard deviation) of period scores across the fleet."""
    share_block_minutes: float = 10.0
    """Time shares are binomial over blocks of this length (see the module docstring)."""
    min_distance_km: float = 100.0
    min_trips: int = 5
    min_hours: float = 2.0
    """Sufficiency minimums (``hours`` is trip time: moving and idle)."""
    confidence: float = 0.95
    """Coverage of the uncertainty interval."""

    def __post_init__(self) -> None:
        if not math.isclose(sum(self.weights().values()), 1.0, abs_tol=1e-9):
            raise ValueError("the sub-score weights must sum to 1")
        if any(w < 0 for w in self.weights().values()):
            raise ValueError("the sub-score weights must not be negative")
        if any(not c > 0 for c in self.scales().values()):
            raise ValueError("the sub-score scales must be positive")
        if not 0 <= self.prior_score <= 100 or self.prior_sd < 0:
            raise ValueError("the prior score must lie in [0, 100] with a non-negative spread")
        if not self.credibility_km > 0 or not self.share_block_minutes > 0:
            raise ValueError("credibility_km and share_block_minutes must be positive")
        if not 0 < self.confidence < 1:
            raise ValueError("confidence must lie in (0, 1)")

    def weights(self) -> dict[SubScore, float]:
        return {
            SubScore.BRAKING: self.braking_weight,
            SubScore.ACCELERATION: self.acceleration_weight,
            SubScore.CORNERING: self.cornering_weight,
            SubScore.SPEEDING: self.speeding_weight,
            SubScore.NIGHT: self.night_weight,
        }

    def scales(self) -> dict[SubScore, float]:
        return {
            SubScore.BRAKING: self.braking_scale,
            SubScore.ACCELERATION: self.acceleration_scale,
            SubScore.CORNERING: self.cornering_scale,
            SubScore.SPEEDING: self.speeding_scale,
            SubScore.NIGHT: self.night_scale,
        }


# -- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReasonCode:
    code: str
    """``HARSH_BRAKING``, ``HARSH_ACCELERATION``, ``HARSH_CORNERING``, ``SPEEDING`` or
    ``NIGHT_DRIVING``."""
    points_lost: float
    """Points of the final score this behaviour cost: ``Z * weight * (100 - sub-score)``."""
    text: str


@dataclass(frozen=True)
class Score:
    """Fields shared by :class:`TripScore` and :class:`PeriodScore`."""

    score_version: str
    vin: str
    score: float
    """Credibility-weighted score ``Z * raw + (1 - Z) * prior``, 0-100."""
    score_low: float
    score_high: float
    """The uncertainty interval, clipped to [0, 100]."""
    interval_half_width: float
    """Unclipped half-width of the interval."""
    confidence: float
    raw_score: float | None
    """Weighted sub-scores; ``None`` without distance."""
    credibility: float
    """``Z = km / (km + K)``."""
    sub_scores: dict[str, float | None]
    """Keyed by :class:`SubScore` value; ``None`` without distance."""
    event_counts: dict[str, int]
    """Events per :class:`~ubi.events.EventType` value."""
    weighted_event_counts: dict[str, int]
    """Severity-weighted (1/2/3) events per type."""
    rates_per_100km: dict[str, float | None]
    """Severity-weighted events per 100 km, per type; ``None`` without distance."""
    speeding_share: float | None
    night_share: float | None
    distance_km: float
    hours: float
    trips: int
    data_sufficient: bool
    insufficient_reasons: list[str]
    reasons: list[ReasonCode]
    """Up to three, most points lost first."""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready plain types; times as ISO 8601 UTC strings (fresh containers: changing
        the result does not change the score)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dt.datetime):
                value = _iso(value)
            elif isinstance(value, dict):
                value = dict(value)
            elif f.name == "reasons":
                value = [asdict(reason) for reason in value]
            elif isinstance(value, list):
                value = list(value)
            out[f.name] = value
        return out


@dataclass(frozen=True)
class TripScore(Score):
    trip_id: str
    trip_start: dt.datetime
    trip_end: dt.datetime


@dataclass(frozen=True)
class PeriodScore(Score):
    period_start: dt.datetime
    period_end: dt.datetime
    """The period is ``[period_start, period_end)``; a trip belongs to it by its start."""
    disputed_trips: int
    """Trips of the period excluded as disputed ("passenger, not driving"), with their events."""
    unassigned_events: int
    """Events of the VIN starting within the period but in no trip given."""


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)


# -- input hygiene ------------------------------------------------------------------------------
def _trip_key(trip: Trip) -> tuple[str, int, str]:
    return (trip.vin, trip.start_ms, trip.trip_id)


def _event_key(event: DrivingEvent) -> tuple[str, int, str, int, int, float, str]:
    return (
        event.vin,
        event.start_ms,
        str(event.type),
        event.end_ms,
        event.severity,
        event.peak_mps2,
        event.source,
    )


def _canonical_trips(trips: Iterable[Trip]) -> list[Trip]:
    """Unique trips sorted by (VIN, start, id); an id used by two different trips is an error."""
    by_id: dict[str, Trip] = {}
    for trip in trips:
        if not (
            math.isfinite(trip.distance_m)
            and trip.distance_m >= 0
            and all(
                math.isfinite(x) and x >= 0
                for x in (trip.duration_s, trip.moving_s, trip.night_s, trip.speeding_s)
            )
        ):
            raise ValueError(f"trip {trip.trip_id}: distances and durations must be >= 0")
        seen = by_id.setdefault(trip.trip_id, trip)
        if seen != trip:
            raise ValueError(f"two different trips share the id {trip.trip_id}")
    return sorted(by_id.values(), key=_trip_key)


def _canonical_events(events: Iterable[DrivingEvent]) -> list[DrivingEvent]:
    """Unique events (a replayed batch may repeat some) in a canonical order."""
    unique = set(events)
    for event in unique:
        if event.severity not in SEVERITIES:
            raise ValueError(f"event severity must be 1, 2 or 3, not {event.severity}")
    return sorted(unique, key=_event_key)


def assign_events(
    trips: Iterable[Trip], events: Iterable[DrivingEvent]
) -> dict[str, list[DrivingEvent]]:
    """Events per trip id: those of the trip's VIN starting within ``[start_ms, end_ms]``.

    Every trip id is a key (an empty list when it has no event). Events outside every trip are
    left out; ``len(events)`` minus the assigned total counts them. Lists are in start order.
    """
    ordered = _canonical_trips(trips)
    assigned: dict[str, list[DrivingEvent]] = {t.trip_id: [] for t in ordered}
    for event in _canonical_events(events):
        trip = _containing_trip(ordered, event)
        if trip is not None:
            assigned[trip.trip_id].append(event)
    return assigned


def _containing_trip(ordered: Sequence[Trip], event: DrivingEvent) -> Trip | None:
    # Trips are few per vehicle and period; a linear scan keeps "earliest start wins" obvious.
    for trip in ordered:
        if trip.vin == event.vin and trip.start_ms <= event.start_ms <= trip.end_ms:
            return trip
    return None


# -- the score ----------------------------------------------------------------------------------
def _share_variance(share: float, seconds: float, params: ScoreParams) -> float:
    blocks = seconds / (60.0 * params.share_block_minutes)
    q = (blocks * share + 0.5) / (blocks + 1.0)
    return q * (1.0 - q) / (blocks + 1.0)


@dataclass(frozen=True)
class _Terms:
    """Sub-scores, their variances and the measure behind each (a rate or a share)."""

    sub: dict[SubScore, float]
    variance: dict[SubScore, float]
    measure: dict[SubScore, float]


def _event_terms(events: Sequence[DrivingEvent], km: float, p: ScoreParams, terms: _Terms) -> None:
    scales = p.scales()
    for kind, name in EVENT_SUB_SCORES.items():
        severities = [e.severity for e in events if e.type is kind]
        rate = 100.0 * sum(severities) / km
        terms.measure[name] = rate
        terms.sub[name] = 100.0 * math.exp(-rate / scales[name])
        # Compound Poisson, plus one severity-1 pseudo-event (see the module docstring).
        rate_variance = (100.0 / km) ** 2 * (sum(s * s for s in severities) + 1)
        terms.variance[name] = (terms.sub[name] / scales[name]) ** 2 * rate_variance


def _share_terms(trips: Sequence[Trip], p: ScoreParams, terms: _Terms) -> None:
    scales = p.scales()
    shares = {
        SubScore.SPEEDING: (
            math.fsum(t.speeding_s for t in trips),
            math.fsum(t.moving_s for t in trips),
        ),
        SubScore.NIGHT: (
            math.fsum(t.night_s for t in trips),
            math.fsum(t.duration_s for t in trips),
        ),
    }
    for name, (part_s, total_s) in shares.items():
        share = min(1.0, part_s / total_s) if total_s > 0 else 0.0
        terms.measure[name] = share
        terms.sub[name] = 100.0 * math.exp(-share / scales[name])
        blocks = total_s / (60.0 * p.share_block_minutes)
        q = (blocks * share + 0.5) / (blocks + 1.0)
        share_variance = q * (1.0 - q) / (blocks + 1.0)
        terms.variance[name] = (terms.sub[name] / scales[name]) ** 2 * share_variance


def _score(
    vin: str, trips: Sequence[Trip], events: Sequence[DrivingEvent], p: ScoreParams
) -> Score:
    """The shared part of a trip or period score over already selected trips and events."""
    km = math.fsum(t.distance_m for t in trips) / 1000.0
    hours = math.fsum(t.duration_s for t in trips) / 3600.0
    counts = {str(k): sum(1 for e in events if e.type is k) for k in EventType}
    weighted = {str(k): sum(e.severity for e in events if e.type is k) for k in EventType}
    rated = km >= MIN_RATED_KM
    credibility = km / (km + p.credibility_km) if rated else 0.0
    terms = _Terms({}, {}, {})
    if rated:
        _event_terms(events, km, p, terms)
        _share_terms(trips, p, terms)
    weights = p.weights()
    raw = math.fsum(weights[n] * terms.sub[n] for n in SubScore) if terms.sub else None
    raw_variance = math.fsum(weights[n] ** 2 * terms.variance[n] for n in terms.variance)
    score = p.prior_score if raw is None else credibility * raw + (1 - credibility) * p.prior_score
    score_variance = credibility**2 * raw_variance + (1 - credibility) ** 2 * p.prior_sd**2
    half_width = NormalDist().inv_cdf(0.5 + p.confidence / 2) * math.sqrt(score_variance)
    insufficient = [
        code
        for code, short in (
            ("INSUFFICIENT_DISTANCE", km < p.min_distance_km),
            ("INSUFFICIENT_TRIPS", len(trips) < p.min_trips),
            ("INSUFFICIENT_DRIVING_TIME", hours < p.min_hours),
        )
        if short
    ]
    return Score(
        score_version=SCORE_VERSION,
        vin=vin,
        score=round(score, 2),
        score_low=round(max(0.0, score - half_width), 2),
        score_high=round(min(100.0, score + half_width), 2),
        interval_half_width=round(half_width, 2),
        confidence=p.confidence,
        raw_score=None if raw is None else round(raw, 2),
        credibility=round(credibility, 4),
        sub_scores={str(n): _maybe_round(terms.sub.get(n), 2) for n in SubScore},
        event_counts=counts,
        weighted_event_counts=weighted,
        rates_per_100km={
            str(k): _maybe_round(terms.measure.get(n), 3) for k, n in EVENT_SUB_SCORES.items()
        },
        speeding_share=_maybe_round(terms.measure.get(SubScore.SPEEDING), 4),
        night_share=_maybe_round(terms.measure.get(SubScore.NIGHT), 4),
        distance_km=round(km, 3),
        hours=round(hours, 3),
        trips=len(trips),
        data_sufficient=not insufficient,
        insufficient_reasons=insufficient,
        reasons=_reasons(terms, credibility, km, weighted, counts, p),
    )


def _maybe_round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _reasons(
    terms: _Terms,
    credibility: float,
    km: float,
    weighted: Mapping[str, int],
    counts: Mapping[str, int],
    p: ScoreParams,
) -> list[ReasonCode]:
    """The top :data:`MAX_REASONS` sub-scores by points lost, ties in :class:`SubScore` order."""
    weights = p.weights()
    lost = {n: credibility * weights[n] * (100.0 - terms.sub[n]) for n in terms.sub}
    order = list(SubScore)
    ranked = sorted(lost, key=lambda n: (-lost[n], order.index(n)))
    reasons: list[ReasonCode] = []
    for name in ranked:
        points = round(lost[name], 2)
        if points > 0 and len(reasons) < MAX_REASONS:
            text = _reason_text(name, points, terms.measure[name], km, weighted, counts)
            reasons.append(ReasonCode(REASON_CODES[name], points, text))
    return reasons


_EVENT_WORDS: Mapping[SubScore, tuple[EventType, str]] = {
    SubScore.BRAKING: (EventType.HARSH_BRAKING, "harsh braking"),
    SubScore.ACCELERATION: (EventType.HARSH_ACCELERATION, "harsh acceleration"),
    SubScore.CORNERING: (EventType.HARSH_CORNERING, "harsh cornering"),
}


def _reason_text(
    name: SubScore,
    points: float,
    measure: float,
    km: float,
    weighted: Mapping[str, int],
    counts: Mapping[str, int],
) -> str:
    cost = f"cost {points:.2f} points"
    if name in _EVENT_WORDS:
        kind, words = _EVENT_WORDS[name]
        n = counts[str(kind)]
        return (
            f"{words.capitalize()}: {n} {'event' if n == 1 else 'events'} (severity-weighted "
            f"{weighted[str(kind)]}) in {km:.1f} km, {measure:.2f} per 100 km, {cost}."
        )
    if name is SubScore.SPEEDING:
        return f"Speeding during {100 * measure:.1f} % of moving time {cost}."
    return f"Driving at night (23:00-05:00) during {100 * measure:.1f} % of trip time {cost}."


# -- public entry points ------------------------------------------------------------------------
def _shared(score: Score) -> dict[str, Any]:
    return {f.name: getattr(score, f.name) for f in fields(Score)}


def score_trip(
    trip: Trip, events: Iterable[DrivingEvent], params: ScoreParams = ScoreParams()
) -> TripScore:
    """The score of one trip, from its own exposure and the events inside it (others in
    ``events`` are ignored)."""
    own = assign_events([trip], events)[trip.trip_id]
    return TripScore(
        **_shared(_score(trip.vin, _canonical_trips([trip]), own, params)),
        trip_id=trip.trip_id,
        trip_start=_utc(trip.start_ms),
        trip_end=_utc(trip.end_ms),
    )


def score_period(
    vin: str,
    trips: Iterable[Trip],
    events: Iterable[DrivingEvent],
    *,
    period_start_ms: int,
    period_end_ms: int,
    excluded_trip_ids: frozenset[str] = frozenset(),
    params: ScoreParams = ScoreParams(),
) -> PeriodScore:
    """The score of ``vin`` over the trips starting in ``[period_start_ms, period_end_ms)``.

    Trips and events of other vehicles are ignored. Trips in ``excluded_trip_ids`` (disputed:
    the policyholder was a passenger) are left out with their events and counted in
    ``disputed_trips``.
    """
    if period_end_ms < period_start_ms:
        raise ValueError("the period ends before it starts")
    own_trips = _canonical_trips(t for t in trips if t.vin == vin)
    own_events = [e for e in _canonical_events(events) if e.vin == vin]
    by_trip = assign_events(own_trips, own_events)
    in_period = [t for t in own_trips if period_start_ms <= t.start_ms < period_end_ms]
    scored = [t for t in in_period if t.trip_id not in excluded_trip_ids]
    scored_events = [e for t in scored for e in by_trip[t.trip_id]]
    assigned = {e for found in by_trip.values() for e in found}
    unassigned = sum(
        1 for e in own_events if period_start_ms <= e.start_ms < period_end_ms and e not in assigned
    )
    return PeriodScore(
        **_shared(_score(vin, scored, scored_events, params)),
        period_start=_utc(period_start_ms),
        period_end=_utc(period_end_ms),
        disputed_trips=len(in_period) - len(scored),
        unassigned_events=unassigned,
    )
