"""Campaign rollout arithmetic: wave plans, wave gates, failure groups and the dry run.

Pure logic, no database: the campaign service maps its rows onto the dataclasses here, calls
these functions, and stores what they return.

Waves
=====

A :class:`WaveSpec` lists the waves of a campaign as **cumulative** targets, the hawkBit and
AWS IoT Jobs convention: ``["5", "25%", "50%", "100%"]`` is a canary of 5 vehicles, then waves
that bring the campaign to 25 %, 50 % and 100 % of the eligible fleet. A target is a count or
a percentage of the fleet (rounded up, so a non-zero percentage of a non-empty fleet is at least
one vehicle); targets are capped at the fleet size and never go down (a wave whose target is
already covered by an earlier one is empty). The last wave must be 100 %: a campaign covers its
whole eligible fleet, and a narrower one narrows its target filter instead. Waves are numbered
from 0 (the canary).

Vehicles are ordered by ``sha256(salt + vin)`` read as a 256-bit number, a uniform value that
has nothing to do with age, VIN order or registration order; a new salt per campaign gives
each campaign a different canary. :func:`plan_waves` guarantees, for one salt and spec:

* **exact sizes**: wave ``k`` holds ``target[k] - target[k-1]`` vehicles of the fleet;
* **hash order**: a vehicle with a lower hash is never in a later wave than one with a higher
  hash, so the canary is the ``target[0]`` vehicles with the lowest hashes;
* **determinism**: the plan depends only on the *set* of VINs, not their order or duplicates.

A plan is made once, at launch, and stored; it is not recomputed when the fleet changes, so no
launched vehicle ever changes wave. A vehicle that becomes eligible later is placed by
:func:`assign_late_joiner` from its hash *quantile* alone: its hash wave is the first ``k`` with
``hash / 2**256 < target[k] / fleet_size``, the wave whose hash range a re-plan of the grown
fleet would most likely put it in (the launch plan cut the same hash order at the empirical
quantiles, which these fractions estimate). It then joins that wave or the wave now running,
whichever is later, never a wave that is already behind the campaign. The hash wave does not
depend on which other vehicles joined, and for a spec of percentages only it does not depend
on the fleet size either (up to rounding of the targets).

Gates
=====

:func:`evaluate_wave` judges one wave from its own counts (:class:`WaveStats`), not pooled
with earlier waves: earlier waves passed their gates already, and thousands of their successes
would hide failures that start now, for example on a hardware variant that this wave's sample
happens to reach. A service evaluates every wave that still has vehicles installing (the
stragglers of an advanced wave too); a pause from any of them pauses the campaign.

Why not "pause when the *upper* bound of the failure rate exceeds the limit" as written in the
issue: the Wilson upper bound of 0 failures in 5 reports is 0.43, far above a 5 % limit, so that
rule would pause every healthy canary (with ``z = 1.96`` and a 5 % limit the upper bound of a
clean record only drops below the limit after 73 reports). The gate therefore reads the bounds
the other way round: a wave *advances* only on hard evidence (its success threshold measured
against the whole wave), and it *pauses* as soon as the evidence is clearly bad. In order:

1. **empty wave** (``total == 0``) → ``complete``.
2. **confidently bad**: at least ``min_reports`` vehicles of the wave reported (succeeded or
   failed) and the Wilson **lower** bound of the failure rate exceeds ``max_failure_rate`` →
   ``pause`` (``failure_rate_above_limit``; the reason carries both bounds). Zero failures
   never pause: their lower bound is 0.
3. **success threshold reached**: ``succeeded / total >= success_threshold`` → ``complete``
   when no vehicle of the wave is still pending, else ``advance`` (the next wave may start; the
   rest of this wave keeps installing). Both mean "go on"; ``complete`` also says the wave is
   done, which on the last wave means the campaign is.
4. **success threshold unreachable**: even if every pending vehicle succeeded, ``succeeded /
   total`` would stay below the threshold → ``pause`` (``success_threshold_unreachable``). This
   is arithmetic, not statistics, so it needs no minimum number of reports, and it is also what
   stops a finished wave that fell short: a wave never waits for reports that cannot come.
5. otherwise ``wait`` (``waiting_for_reports`` below ``min_reports``, else
   ``waiting_for_success_threshold``). A wave that waits has no timeout here; a service that
   wants one applies its own wave deadline.

Examples with the defaults (``success_threshold=0.95``, ``max_failure_rate=0.05``,
``min_reports=5``, ``z=1.96``); "pending" is in progress plus not started::

    wave   succ  fail  pending | Wilson lower  upper | action    code
    ----------------------------------------------------------------------------------------
    5      5     0     0       | 0.000         0.434 | complete  success_threshold_reached
    5      3     0     2       | 0.000         0.562 | wait      waiting_for_reports
    5      0     1     4       | 0.207         1.000 | pause     success_threshold_unreachable
    5      3     2     0       | 0.118         0.769 | pause     failure_rate_above_limit
    10     4     1     5       | 0.036         0.624 | pause     success_threshold_unreachable
    10     8     2     0       | 0.057         0.510 | pause     failure_rate_above_limit
    100    5     3     92      | 0.137         0.694 | pause     failure_rate_above_limit
    100    30    1     69      | 0.006         0.162 | wait      waiting_for_success_threshold
    100    94    1     5       | 0.002         0.057 | wait      waiting_for_success_threshold
    100    95    1     4       | 0.002         0.057 | advance   success_threshold_reached
    1000   180   20    800     | 0.066         0.149 | pause     failure_rate_above_limit

So a canary of 5 with no failure completes, a canary of 5 to 10 with two or more failures
pauses (usually at its first failure already, because a canary that small can only meet a
95 % threshold if every vehicle succeeds), and a wave of 100 or 1000 pauses part-way through,
long before it finishes, once its failures are clearly above the limit.

Eligibility (the dry run)
=========================

:func:`eligibility` decides per vehicle from :class:`VehicleFacts`, its :class:`EcuFacts` and
the campaign's :class:`TargetFilter` and :class:`ImageFacts`; see there. Versions compare by
:func:`parse_version`: dotted numbers, numerically, trailing zeros ignored (``1.10 > 1.9``,
``1.2 == 1.2.0``), an optional ``v`` prefix, a ``-pre.release`` suffix that sorts before the
release itself (``2.0.0-rc.2 < 2.0.0-rc.10 < 2.0.0``), and ``+build`` metadata ignored.
(``packaging.version`` is not a declared dependency of the project, and ECU versions are not
PEP 440 versions.) A version a vehicle reports that does not parse never satisfies a
version condition.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from fractions import Fraction
from typing import NamedTuple

HASH_SPACE = 2**256
"""``sha256(salt + vin)`` read as a big-endian integer is uniform in ``[0, HASH_SPACE)``."""

MAX_EXAMPLE_VINS = 5
"""How many example VINs a :class:`FailureGroup` lists."""


# --- waves -------------------------------------------------------------------------------------


class WaveSpecError(ValueError):
    """A wave plan that cannot be used; the message says which wave and why."""


@dataclass(frozen=True, slots=True)
class WaveSize:
    """The cumulative target of one wave: exactly one of ``count`` or ``percent``."""

    count: int | None = None
    """Absolute number of vehicles covered once this wave is done (>= 1)."""
    percent: Fraction | float | None = None
    """Share of the eligible fleet covered once this wave is done, in (0, 100]."""

    def __post_init__(self) -> None:
        if isinstance(self.percent, float | int) and not isinstance(self.percent, bool):
            # via str: 12.5 stays 25/2 and 33.3 stays 333/10, not their binary neighbours
            object.__setattr__(self, "percent", Fraction(str(self.percent)))
        if (self.count is None) == (self.percent is None):
            raise WaveSpecError("a wave size is either a count or a percentage, exactly one")
        if self.count is not None and (isinstance(self.count, bool) or self.count < 1):
            raise WaveSpecError(f"a wave count must be at least 1, not {self.count!r}")
        if self.percent is not None and not 0 < self.percent <= 100:
            raise WaveSpecError(f"a wave percentage must be in (0, 100], not {self.percent}")

    @classmethod
    def parse(cls, value: str | int) -> WaveSize:
        """``5`` or ``"5"`` is a count, ``"25%"`` or ``"12.5%"`` a percentage."""
        if isinstance(value, bool):
            raise WaveSpecError(f"a wave size is a count or 'N%', not {value!r}")
        if isinstance(value, int):
            return cls(count=value)
        text = value.strip()
        is_percent = text.endswith("%")
        try:
            # Fraction(str) is exact: "33.3%" of 1000 is 333, not 332.99999.
            number = Fraction(text[:-1].strip()) if is_percent else int(text)
        except (ValueError, ZeroDivisionError):
            raise WaveSpecError(f"a wave size is a count or 'N%', not {value!r}") from None
        return cls(percent=number) if is_percent else cls(count=int(number))

    def target(self, fleet_size: int) -> int:
        """The cumulative number of vehicles this wave alone asks for, capped at the fleet."""
        if self.count is not None:
            return min(self.count, fleet_size)
        assert self.percent is not None
        return min(math.ceil(self.percent * fleet_size / 100), fleet_size)

    def __str__(self) -> str:
        if self.count is not None:
            return str(self.count)
        assert self.percent is not None
        return f"{float(self.percent):g}%"


@dataclass(frozen=True, slots=True)
class WaveSpec:
    """The waves of a campaign as cumulative targets; the last one must be 100 %."""

    waves: tuple[WaveSize, ...]

    def __post_init__(self) -> None:
        if not self.waves:
            raise WaveSpecError("a wave plan needs at least one wave")
        last = self.waves[-1]
        if last.percent != 100:
            raise WaveSpecError(f"the last wave must be 100% (the whole fleet), not {last}")
        for kind in ("count", "percent"):
            values = [getattr(w, kind) for w in self.waves if getattr(w, kind) is not None]
            if any(b <= a for a, b in zip(values, values[1:], strict=False)):
                raise WaveSpecError(
                    f"wave targets are cumulative: each {kind} must be larger than the one "
                    f"before ({', '.join(str(w) for w in self.waves)})"
                )

    @classmethod
    def parse(cls, sizes: Iterable[str | int | WaveSize]) -> WaveSpec:
        """``WaveSpec.parse(["5", "25%", "50%", "100%"])``."""
        waves = []
        for index, size in enumerate(sizes):
            try:
                waves.append(size if isinstance(size, WaveSize) else WaveSize.parse(size))
            except WaveSpecError as exc:
                raise WaveSpecError(f"wave {index}: {exc}") from None
        return cls(tuple(waves))

    def __len__(self) -> int:
        return len(self.waves)

    def cumulative_targets(self, fleet_size: int) -> list[int]:
        """Vehicles covered once each wave is done; non-decreasing, the last is the fleet."""
        _check_fleet_size(fleet_size)
        targets, covered = [], 0
        for wave in self.waves:
            covered = max(covered, wave.target(fleet_size))
            targets.append(covered)
        return targets

    def wave_sizes(self, fleet_size: int) -> list[int]:
        """Vehicles in each wave (some may be 0); they add up to ``fleet_size``."""
        targets = self.cumulative_targets(fleet_size)
        return [b - a for a, b in zip([0, *targets], targets, strict=False)]


def _check_fleet_size(fleet_size: int) -> None:
    if fleet_size < 0:
        raise ValueError(f"fleet_size must be >= 0, not {fleet_size}")


def vin_hash(vin: str, salt: str) -> int:
    """``sha256(salt + vin)`` as an integer in ``[0, HASH_SPACE)``."""
    return int.from_bytes(hashlib.sha256((salt + vin).encode()).digest(), "big")


def plan_waves(vins: Iterable[str], salt: str, spec: WaveSpec) -> dict[str, int]:
    """Wave index (0 = canary) of every VIN, by ascending salted hash; see the module docstring
    for the guarantees (exact sizes, hash order, determinism)."""
    ranked = sorted(set(vins), key=lambda vin: (vin_hash(vin, salt), vin))
    targets = spec.cumulative_targets(len(ranked))
    plan: dict[str, int] = {}
    wave = 0
    for rank, vin in enumerate(ranked):
        while rank >= targets[wave]:
            wave += 1
        plan[vin] = wave
    return plan


def hash_wave(vin: str, salt: str, spec: WaveSpec, fleet_size: int) -> int:
    """The wave whose hash range holds ``vin`` in a fleet of ``fleet_size``: the first ``k`` with
    ``hash / 2**256 < target[k] / fleet_size``."""
    if fleet_size < 1:
        raise ValueError(f"fleet_size must be >= 1, not {fleet_size}")
    position = vin_hash(vin, salt) * fleet_size  # exact integers: no float rounding at edges
    for wave, target in enumerate(spec.cumulative_targets(fleet_size)):
        if position < target * HASH_SPACE:
            return wave
    raise AssertionError("unreachable: the last target is the whole fleet")


def assign_late_joiner(
    vin: str, salt: str, spec: WaveSpec, fleet_size: int, current_wave: int
) -> int:
    """The wave for a vehicle that became eligible after launch.

    ``fleet_size`` is the campaign's fleet counting this vehicle (planned plus joined);
    ``current_wave`` is the wave now running, the earliest one not yet behind the campaign
    (pass the last wave once the campaign has advanced to it). The vehicle joins its
    :func:`hash_wave` or ``current_wave``, whichever is later.
    """
    if not 0 <= current_wave < len(spec):
        raise ValueError(f"current_wave must be in [0, {len(spec) - 1}], not {current_wave}")
    return max(current_wave, hash_wave(vin, salt, spec, fleet_size))


def estimate_duration(
    spec: WaveSpec,
    fleet_size: int,
    per_vehicle_s: float,
    wave_soak_s: float,
    *,
    max_concurrent: int | None = None,
) -> timedelta:
    """Expected campaign duration for the dry run.

    Waves run one after another. The vehicles of a wave install in parallel, ``per_vehicle_s``
    each (from notification to report), in batches of ``max_concurrent`` if given; between two
    waves the gate watches the finished wave for ``wave_soak_s``. Empty waves take no time, and
    nothing is soaked after the last wave.
    """
    if per_vehicle_s < 0 or wave_soak_s < 0:
        raise ValueError("per_vehicle_s and wave_soak_s must be >= 0")
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1, not {max_concurrent}")
    sizes = [size for size in spec.wave_sizes(fleet_size) if size > 0]
    if not sizes:
        return timedelta(0)
    batches = sum(1 if max_concurrent is None else math.ceil(s / max_concurrent) for s in sizes)
    return timedelta(seconds=batches * per_vehicle_s + (len(sizes) - 1) * wave_soak_s)


# --- gates -------------------------------------------------------------------------------------


def _wilson(failures: int, n: int, z: float) -> tuple[float, float]:
    if n < 0 or not 0 <= failures <= max(n, 0):
        raise ValueError(f"need 0 <= failures <= n, got failures={failures}, n={n}")
    if z <= 0:
        raise ValueError(f"z must be > 0, not {z}")
    if n == 0:
        return 0.0, 1.0
    p = failures / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # At p = 0 (p = 1) the exact lower (upper) bound is 0 (1); rounding must not move it.
    lower = 0.0 if failures == 0 else max(0.0, centre - half_width)
    upper = 1.0 if failures == n else min(1.0, centre + half_width)
    return lower, upper


def wilson_upper(failures: int, n: int, z: float = 1.96) -> float:
    """Upper bound of the Wilson score interval of ``failures / n``; 1.0 when ``n == 0``."""
    return _wilson(failures, n, z)[1]


def wilson_lower(failures: int, n: int, z: float = 1.96) -> float:
    """Lower bound of the Wilson score interval of ``failures / n``; 0.0 when ``n == 0``."""
    return _wilson(failures, n, z)[0]


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """When a wave advances or pauses; see the module docstring for the rule."""

    success_threshold: float = 0.95
    """Share of the wave's vehicles that must have succeeded before the next wave starts."""
    max_failure_rate: float = 0.05
    """A wave pauses once its failure rate is confidently above this."""
    min_reports: int = 5
    """Reports (successes plus failures) a wave needs before the failure-rate test applies."""
    z: float = 1.96
    """Normal quantile of the Wilson interval (1.96: 95 % two-sided)."""

    def __post_init__(self) -> None:
        if not 0 < self.success_threshold <= 1:
            raise ValueError("success_threshold must be in (0, 1]")
        if not 0 <= self.max_failure_rate < 1:
            raise ValueError("max_failure_rate must be in [0, 1)")
        if self.min_reports < 1:
            raise ValueError("min_reports must be >= 1")
        if self.z <= 0:
            raise ValueError("z must be > 0")


@dataclass(frozen=True, slots=True)
class WaveStats:
    """Counts of one wave's vehicles by outcome; ``total`` is the sum of the other four."""

    total: int
    succeeded: int
    failed: int
    in_progress: int
    not_started: int

    def __post_init__(self) -> None:
        parts = (self.succeeded, self.failed, self.in_progress, self.not_started)
        if min(parts) < 0 or sum(parts) != self.total:
            raise ValueError(
                f"inconsistent wave stats: total={self.total} but succeeded={self.succeeded}, "
                f"failed={self.failed}, in_progress={self.in_progress}, "
                f"not_started={self.not_started}"
            )

    @property
    def reported(self) -> int:
        """Vehicles with a final result."""
        return self.succeeded + self.failed

    @property
    def pending(self) -> int:
        """Vehicles without a final result yet."""
        return self.in_progress + self.not_started


class GateAction(StrEnum):
    ADVANCE = "advance"
    """The success threshold is reached; start the next wave. This one is still running."""
    WAIT = "wait"
    """No decision yet."""
    PAUSE = "pause"
    """Stop the campaign for an operator; the reason says why."""
    COMPLETE = "complete"
    """The wave is done and passed (or was empty); start the next wave, or finish."""


class GateCode(StrEnum):
    EMPTY_WAVE = "empty_wave"
    FAILURE_RATE_ABOVE_LIMIT = "failure_rate_above_limit"
    SUCCESS_THRESHOLD_REACHED = "success_threshold_reached"
    SUCCESS_THRESHOLD_UNREACHABLE = "success_threshold_unreachable"
    WAITING_FOR_REPORTS = "waiting_for_reports"
    WAITING_FOR_SUCCESS_THRESHOLD = "waiting_for_success_threshold"


GateReason = dict[str, str | int | float]
"""JSON-ready: always a ``"code"`` (a :class:`GateCode` value) and the numbers behind it."""


@dataclass(frozen=True, slots=True)
class GateDecision:
    action: GateAction
    reason: GateReason


def evaluate_wave(stats: WaveStats, policy: GatePolicy | None = None) -> GateDecision:
    """The gate decision for one wave (see the module docstring for the rule and examples).

    Reasons by code, besides ``"code"``:

    * ``empty_wave``: ``total``.
    * ``failure_rate_above_limit``: ``failures``, ``reported``, ``lower_bound``,
      ``upper_bound``, ``limit``, ``z``, ``min_reports``.
    * ``success_threshold_reached``: ``succeeded``, ``total``, ``success_rate``,
      ``success_threshold``, ``pending``.
    * ``success_threshold_unreachable``: ``failures``, ``total``, ``max_success_rate``,
      ``success_threshold``.
    * ``waiting_for_reports``: ``reported``, ``min_reports``, ``failures``.
    * ``waiting_for_success_threshold``: ``succeeded``, ``total``, ``success_rate``,
      ``success_threshold``, ``failures``, ``reported``, ``lower_bound``, ``upper_bound``,
      ``limit``.
    """
    policy = policy or GatePolicy()
    total, failures, reported = stats.total, stats.failed, stats.reported
    if total == 0:
        return GateDecision(GateAction.COMPLETE, {"code": GateCode.EMPTY_WAVE.value, "total": 0})

    lower, upper = _wilson(failures, reported, policy.z)
    if reported >= policy.min_reports and lower > policy.max_failure_rate:
        return GateDecision(
            GateAction.PAUSE,
            {
                "code": GateCode.FAILURE_RATE_ABOVE_LIMIT.value,
                "failures": failures,
                "reported": reported,
                "lower_bound": lower,
                "upper_bound": upper,
                "limit": policy.max_failure_rate,
                "z": policy.z,
                "min_reports": policy.min_reports,
            },
        )

    # Compare counts, not rates: 19 of 20 must reach a 0.95 threshold despite float rounding.
    threshold = Fraction(policy.success_threshold).limit_denominator(10**9)
    if stats.succeeded >= threshold * total:
        action = GateAction.ADVANCE if stats.pending else GateAction.COMPLETE
        return GateDecision(
            action,
            {
                "code": GateCode.SUCCESS_THRESHOLD_REACHED.value,
                "succeeded": stats.succeeded,
                "total": total,
                "success_rate": stats.succeeded / total,
                "success_threshold": policy.success_threshold,
                "pending": stats.pending,
            },
        )

    best_case = stats.succeeded + stats.pending
    if best_case < threshold * total:
        return GateDecision(
            GateAction.PAUSE,
            {
                "code": GateCode.SUCCESS_THRESHOLD_UNREACHABLE.value,
                "failures": failures,
                "total": total,
                "max_success_rate": best_case / total,
                "success_threshold": policy.success_threshold,
            },
        )

    if reported < policy.min_reports:
        return GateDecision(
            GateAction.WAIT,
            {
                "code": GateCode.WAITING_FOR_REPORTS.value,
                "reported": reported,
                "min_reports": policy.min_reports,
                "failures": failures,
            },
        )
    return GateDecision(
        GateAction.WAIT,
        {
            "code": GateCode.WAITING_FOR_SUCCESS_THRESHOLD.value,
            "succeeded": stats.succeeded,
            "total": total,
            "success_rate": stats.succeeded / total,
            "success_threshold": policy.success_threshold,
            "failures": failures,
            "reported": reported,
            "lower_bound": lower,
            "upper_bound": upper,
            "limit": policy.max_failure_rate,
        },
    )


# --- failure groups ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailureReport:
    """One failed install, as a vehicle reported it."""

    vin: str
    error_code: str
    """The vehicle's error code; the service passes ``"unknown"`` when the report has none."""
    hardware_id: str
    """Hardware id of the ECU that failed (the hardware variant)."""
    ecu_id: str | None = None


@dataclass(frozen=True, slots=True)
class FailureGroup:
    error_code: str
    hardware_id: str
    vehicles: int
    """Distinct vehicles with this failure."""
    reports: int
    """Failure reports (a vehicle may fail on several ECUs or attempts)."""
    example_vins: tuple[str, ...]
    """Up to :data:`MAX_EXAMPLE_VINS` of those vehicles, in VIN order."""


def group_failures(failures: Iterable[FailureReport]) -> list[FailureGroup]:
    """Failures grouped by (error code, hardware id), most vehicles first (then most reports,
    then error code and hardware id, so the order is stable)."""
    vins: dict[tuple[str, str], set[str]] = {}
    reports: dict[tuple[str, str], int] = {}
    for failure in failures:
        key = (failure.error_code, failure.hardware_id)
        vins.setdefault(key, set()).add(failure.vin)
        reports[key] = reports.get(key, 0) + 1
    groups = [
        FailureGroup(
            error_code=code,
            hardware_id=hardware_id,
            vehicles=len(vins[code, hardware_id]),
            reports=reports[code, hardware_id],
            example_vins=tuple(sorted(vins[code, hardware_id])[:MAX_EXAMPLE_VINS]),
        )
        for code, hardware_id in vins
    ]
    groups.sort(key=lambda g: (-g.vehicles, -g.reports, g.error_code, g.hardware_id))
    return groups


# --- versions ----------------------------------------------------------------------------------


class InvalidVersion(ValueError):
    """A version string that :func:`parse_version` does not understand."""


class Version(NamedTuple):
    """A parsed version; compare instances with ``<``, ``==`` etc."""

    release: tuple[int, ...]
    """Dotted numbers without trailing zeros."""
    is_final: bool
    """False for a pre-release, which sorts before the release itself."""
    pre_release: tuple[tuple[tuple[int, int | str], ...], ...]
    """Pre-release identifiers, each split into (0, digits) and (1, letters) runs."""


_VERSION = re.compile(
    r"[vV]?(?P<release>\d+(?:\.\d+)*)(?:-(?P<pre>[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*))?"
    r"(?:\+[0-9A-Za-z.-]*)?"
)
_RUN = re.compile(r"\d+|[A-Za-z]+")


def parse_version(text: str) -> Version:
    """Parse a version by the rule in the module docstring; raise :class:`InvalidVersion`."""
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        raise InvalidVersion(f"{text!r} is not a version (expected dotted numbers, e.g. 4.2.0)")
    release = [int(part) for part in match["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre = match["pre"]
    if pre is None:
        return Version(tuple(release), True, ())
    identifiers = tuple(
        tuple((0, int(run)) if run.isdigit() else (1, run) for run in _RUN.findall(identifier))
        for identifier in re.split(r"[.-]", pre)
    )
    return Version(tuple(release), False, identifiers)


def _try_parse_version(text: str | None) -> Version | None:
    if text is None:
        return None
    try:
        return parse_version(text)
    except InvalidVersion:
        return None


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, equal to or newer than ``b``."""
    va, vb = parse_version(a), parse_version(b)
    return (va > vb) - (va < vb)


# --- eligibility -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VehicleFacts:
    vin: str
    model: str
    model_year: int
    region: str
    tags: Collection[str] = frozenset()


@dataclass(frozen=True, slots=True)
class EcuFacts:
    """One ECU of a vehicle and what it runs (from the inventory or the last version manifest)."""

    ecu_id: str
    """The ECU's role in the vehicle, unique per vehicle, e.g. ``"BMS"``."""
    hardware_id: str
    software_version: str | None
    release_counter: int | None = None
    """Uptane release counter of the installed image, when the vehicle reported it."""


def _check_selector(owner: str, ecu_id: str | None, hardware_id: str | None) -> None:
    if (ecu_id is None) == (hardware_id is None):
        raise ValueError(f"{owner} names an ECU by ecu_id or by hardware_id, exactly one")


def _selected(
    ecus: Iterable[EcuFacts], ecu_id: str | None, hardware_id: str | None
) -> list[EcuFacts]:
    if ecu_id is not None:
        return [ecu for ecu in ecus if ecu.ecu_id == ecu_id]
    return [ecu for ecu in ecus if ecu.hardware_id == hardware_id]


@dataclass(frozen=True, slots=True)
class SoftwareCondition:
    """A target-filter condition on the software an ECU runs now.

    The ECUs are named by ``ecu_id`` or ``hardware_id`` (exactly one). The condition holds when
    the vehicle has at least one such ECU and every one of them runs a version in ``versions``
    (when given) and within ``[min_version, max_version]`` (each bound inclusive, when given).
    """

    ecu_id: str | None = None
    hardware_id: str | None = None
    versions: frozenset[str] = frozenset()
    min_version: str | None = None
    max_version: str | None = None

    def __post_init__(self) -> None:
        _check_selector("a software condition", self.ecu_id, self.hardware_id)
        for bound in (self.min_version, self.max_version, *self.versions):
            if bound is not None:
                parse_version(bound)

    def matches(self, ecus: Iterable[EcuFacts]) -> bool:
        selected = _selected(ecus, self.ecu_id, self.hardware_id)
        return bool(selected) and all(self._matches_one(ecu) for ecu in selected)

    def _matches_one(self, ecu: EcuFacts) -> bool:
        version = _try_parse_version(ecu.software_version)
        if version is None:
            return False
        if self.versions and version not in {parse_version(v) for v in self.versions}:
            return False
        if self.min_version is not None and version < parse_version(self.min_version):
            return False
        return self.max_version is None or version <= parse_version(self.max_version)


@dataclass(frozen=True, slots=True)
class TargetFilter:
    """Which vehicles a campaign targets; every given condition must hold (empty = any)."""

    models: frozenset[str] = frozenset()
    model_year_min: int | None = None
    model_year_max: int | None = None
    regions: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    """The vehicle must have all of these."""
    software: tuple[SoftwareCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class Dependency:
    """An image needs another ECU (by ``ecu_id`` or ``hardware_id``, exactly one) to run at
    least ``min_version`` already: met when the vehicle has at least one such ECU and every
    one of them does. Checked against installed versions, not against other campaigns."""

    min_version: str
    ecu_id: str | None = None
    hardware_id: str | None = None

    def __post_init__(self) -> None:
        _check_selector("a dependency", self.ecu_id, self.hardware_id)
        parse_version(self.min_version)

    def is_met(self, ecus: Iterable[EcuFacts]) -> bool:
        selected = _selected(ecus, self.ecu_id, self.hardware_id)
        minimum = parse_version(self.min_version)
        return bool(selected) and all(
            (v := _try_parse_version(ecu.software_version)) is not None and v >= minimum
            for ecu in selected
        )

    def __str__(self) -> str:
        return f"{self.ecu_id or self.hardware_id} >= {self.min_version}"


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """The software image a campaign installs."""

    version: str
    release_counter: int
    hardware_ids: frozenset[str]
    """ECU hardware ids the image fits."""
    dependencies: tuple[Dependency, ...] = ()

    def __post_init__(self) -> None:
        parse_version(self.version)


class EligibilityReason(StrEnum):
    # Not targeted: the campaign's filter leaves the vehicle out.
    MODEL_NOT_TARGETED = "model_not_targeted"
    MODEL_YEAR_NOT_TARGETED = "model_year_not_targeted"
    REGION_NOT_TARGETED = "region_not_targeted"
    TAGS_MISSING = "tags_missing"
    SOFTWARE_NOT_TARGETED = "software_not_targeted"
    # Blocked: targeted, but the image cannot or need not be installed.
    INCOMPATIBLE_HARDWARE = "incompatible_hardware"
    UP_TO_DATE = "up_to_date"
    DEPENDENCY_UNMET = "dependency_unmet"


BLOCKED_REASONS = frozenset(
    {
        EligibilityReason.INCOMPATIBLE_HARDWARE,
        EligibilityReason.UP_TO_DATE,
        EligibilityReason.DEPENDENCY_UNMET,
    }
)
"""Reasons of vehicles the filter targets but the campaign cannot update (the dry run's
"blocked"); the other reasons are vehicles the filter leaves out."""


@dataclass(frozen=True, slots=True)
class Eligibility:
    eligible: bool
    reason: EligibilityReason | None = None
    """Why not, when not eligible."""
    detail: str | None = None
    """A sentence for people, e.g. which dependency is unmet."""
    target_ecu_ids: tuple[str, ...] = ()
    """The ECUs to update, when eligible (those of a fitting hardware id, not up to date)."""

    @property
    def blocked(self) -> bool:
        return self.reason in BLOCKED_REASONS


def _is_up_to_date(ecu: EcuFacts, image: ImageFacts) -> bool:
    """Already on the image's version or newer, by release counter or by version: either one
    says so, because offering what looks like a downgrade is never right."""
    if ecu.release_counter is not None and ecu.release_counter >= image.release_counter:
        return True
    installed = _try_parse_version(ecu.software_version)
    return installed is not None and installed >= parse_version(image.version)


def _not_targeted(
    vehicle: VehicleFacts, ecus: Sequence[EcuFacts], target_filter: TargetFilter
) -> Eligibility | None:
    f = target_filter
    if f.models and vehicle.model not in f.models:
        return Eligibility(False, EligibilityReason.MODEL_NOT_TARGETED)
    if (f.model_year_min is not None and vehicle.model_year < f.model_year_min) or (
        f.model_year_max is not None and vehicle.model_year > f.model_year_max
    ):
        return Eligibility(False, EligibilityReason.MODEL_YEAR_NOT_TARGETED)
    if f.regions and vehicle.region not in f.regions:
        return Eligibility(False, EligibilityReason.REGION_NOT_TARGETED)
    missing = f.tags - set(vehicle.tags)
    if missing:
        return Eligibility(
            False, EligibilityReason.TAGS_MISSING, f"missing tags: {', '.join(sorted(missing))}"
        )
    for condition in f.software:
        if not condition.matches(ecus):
            return Eligibility(False, EligibilityReason.SOFTWARE_NOT_TARGETED)
    return None


def eligibility(
    vehicle: VehicleFacts,
    ecus: Sequence[EcuFacts],
    target_filter: TargetFilter,
    image: ImageFacts,
) -> Eligibility:
    """Whether the campaign updates this vehicle, and if not why, checked in this order:

    1. the target filter (model, model year range, region, all tags, software conditions);
    2. ``incompatible_hardware``: no ECU has one of the image's hardware ids;
    3. ``up_to_date``: every fitting ECU already runs the image's version or newer (by
       version or by release counter);
    4. ``dependency_unmet``: one of the image's :class:`Dependency` is not met.

    An eligible vehicle lists the ECUs to update: the fitting ones that are not up to date.
    """
    excluded = _not_targeted(vehicle, ecus, target_filter)
    if excluded is not None:
        return excluded
    fitting = [ecu for ecu in ecus if ecu.hardware_id in image.hardware_ids]
    if not fitting:
        return Eligibility(
            False,
            EligibilityReason.INCOMPATIBLE_HARDWARE,
            f"no ECU with hardware id {', '.join(sorted(image.hardware_ids))}",
        )
    outdated = [ecu for ecu in fitting if not _is_up_to_date(ecu, image)]
    if not outdated:
        return Eligibility(False, EligibilityReason.UP_TO_DATE)
    unmet = [str(dep) for dep in image.dependencies if not dep.is_met(ecus)]
    if unmet:
        return Eligibility(False, EligibilityReason.DEPENDENCY_UNMET, f"needs {'; '.join(unmet)}")
    return Eligibility(True, target_ecu_ids=tuple(ecu.ecu_id for ecu in outdated))


__all__ = [
    "BLOCKED_REASONS",
    "HASH_SPACE",
    "MAX_EXAMPLE_VINS",
    "Dependency",
    "EcuFacts",
    "Eligibility",
    "EligibilityReason",
    "FailureGroup",
    "FailureReport",
    "GateAction",
    "GateCode",
    "GateDecision",
    "GatePolicy",
    "GateReason",
    "ImageFacts",
    "InvalidVersion",
    "SoftwareCondition",
    "TargetFilter",
    "VehicleFacts",
    "Version",
    "WaveSize",
    "WaveSpec",
    "WaveSpecError",
    "WaveStats",
    "assign_late_joiner",
    "compare_versions",
    "eligibility",
    "estimate_duration",
    "evaluate_wave",
    "group_failures",
    "hash_wave",
    "parse_version",
    "plan_waves",
    "vin_hash",
    "wilson_lower",
    "wilson_upper",
]
