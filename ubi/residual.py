"""Battery residual score for used-car and recycling partners, from a :class:`BatteryHealth`.

Parameters (``ResidualParams``, all overridable per partner contract):

* warranty: 8 years / 160,000 km, capacity guaranteed at 70 % SoH (the usual BEV battery
  warranty); ``warranty_headroom_pts`` = lower bound of the SoH interval minus 70,
  ``warranty_years_left`` and ``warranty_km_left`` when the in-service date / odometer are known;
* reference fade 2.0 points per year (a fleet-typical NMC pack): ``expected_soh_pct`` =
  100 - 2.0 x age; ``residual_value_adjustment_pct`` = 1.0 % of the vehicle's value per point
  of SoH above (+) or below (-) that expectation, clipped to ±25 %, computed from the
  conservative end of the interval when the SoH is above expectation (a buyer should not pay
  for a health that is not yet proven);
* second-life grade (on the lower interval bound): ``A`` >= 80 % (further automotive use),
  ``B`` >= 70 % (second-life automotive / demanding stationary), ``C`` >= 60 % (stationary
  storage), ``D`` below (recycling); one grade down when the DC fast-charge share exceeds 60 % or
  more than 10 deep discharges were seen; ``U`` when no SoH could be estimated.

Quality flags: ``too_few_sessions`` (fewer than ``min_sessions`` sessions used),
``soc_noise`` (median SoC residual above ``max_soc_noise_pct``), ``short_history`` (less than
``min_history_days`` of data), ``wide_interval`` (half-width above ``max_half_width_pts``),
``no_trend`` (no fade rate), ``no_capacity_rating`` (no capacity-based SoH).

Field mapping (names chosen to match the regulations' data attributes; verify against the
implementing acts in force before a filing):

===============================  ===================================  ==============================
field                            EU battery passport                  China traceability
                                 (Reg. (EU) 2023/1542, Art. 14,        (GB/T 32960 data, MIIT
                                 Annex VII/XIII)                       traceability platform,
                                                                       GB/T 34015 echelon use)
===============================  ===================================  ==============================
``state_of_health_pct``          state of health; for EV batteries    剩余能量/健康状态 (SOH)
                                 the state of certified energy
                                 (SOCE, UN GTR No. 22)
``state_of_health_low/high_pct`` uncertainty of the SoH value          —
``remaining_capacity_kwh``       remaining energy                      剩余能量
``remaining_capacity_ah``        remaining capacity                    剩余容量 (GB/T 34015)
``capacity_fade_pct``            capacity fade (%)                     容量衰减
``rated_capacity_kwh``           rated capacity / certified energy     额定能量
``energy_throughput_kwh``        energy throughput                     累计充电量
``equivalent_full_cycles``       number of full equivalent cycles      循环次数
``deep_discharge_events``        negative events: deep discharge       —
``hours_extreme_temperature``    time spent in extreme temperatures    温度异常时长
``dc_fast_charge_share``         (usage/stress information)            快充比例
``second_life_grade``            status: repurposed / for recycling    梯次利用等级 (echelon grade)
``pseudonym`` (added by the API) battery passport identifier's holder  电池编码 (GB/T 34014), mapped
                                 view (no VIN to partners)             by the partner API
===============================  ===================================  ==============================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from ubi.battery import BatteryHealth, BatterySpec

__all__ = ["ResidualParams", "ResidualScore", "SCORE_VERSION", "residual_score"]

SCORE_VERSION = "battery-residual-1"
_YEAR_MS = 365.25 * 86_400_000


@dataclass(frozen=True)
class ResidualParams:
    warranty_years: float = 8.0
    warranty_km: float = 160_000.0
    warranty_soh_pct: float = 70.0
    reference_fade_pct_per_year: float = 2.0
    value_pct_per_soh_pt: float = 1.0
    max_adjustment_pct: float = 25.0
    min_sessions: int = 3
    max_soc_noise_pct: float = 1.5
    min_history_days: float = 14.0
    max_half_width_pts: float = 3.0
    stress_dc_share: float = 0.6
    stress_deep_discharges: int = 10


@dataclass(frozen=True)
class ResidualScore:
    score_version: str
    state_of_health_pct: float | None
    state_of_health_low_pct: float | None
    state_of_health_high_pct: float | None
    state_of_health_capacity_pct: float | None
    rated_capacity_kwh: float
    remaining_capacity_kwh: float | None
    remaining_capacity_ah: float | None
    capacity_fade_pct: float | None
    fade_pct_per_year: float | None
    date_soh_80: datetime | None
    date_soh_70: datetime | None
    expected_soh_pct: float | None
    warranty_headroom_pts: float | None
    warranty_years_left: float | None
    warranty_km_left: float | None
    second_life_grade: str
    residual_value_adjustment_pct: float | None
    energy_throughput_kwh: float
    equivalent_full_cycles: float
    dc_fast_charge_share: float
    high_soc_share: float
    hours_extreme_temperature: float
    deep_discharge_events: int
    sessions_used: int
    quality_flags: tuple[str, ...] = field(default=())


def _grade(soh_low: float | None, health: BatteryHealth, params: ResidualParams) -> str:
    if soh_low is None:
        return "U"
    grades = "ABCD"
    index = 0 if soh_low >= 80 else 1 if soh_low >= 70 else 2 if soh_low >= 60 else 3
    stress = health.stress
    if stress.dc_share > params.stress_dc_share or (
        stress.deep_discharges > params.stress_deep_discharges
    ):
        index = min(3, index + 1)
    return grades[index]


def residual_score(
    health: BatteryHealth, spec: BatterySpec, params: ResidualParams | None = None
) -> ResidualScore:
    p = params or ResidualParams()
    soh, low, high = health.soh_pct, health.soh_low_pct, health.soh_high_pct
    flags: list[str] = []
    if health.sessions_used < p.min_sessions:
        flags.append("too_few_sessions")
    if health.soc_noise_pct is not None and health.soc_noise_pct > p.max_soc_noise_pct:
        flags.append("soc_noise")
    span_days = (
        (health.last_ms - health.first_ms) / 86_400_000
        if health.first_ms is not None and health.last_ms is not None
        else 0.0
    )
    if span_days < p.min_history_days:
        flags.append("short_history")
    if low is not None and high is not None and (high - low) / 2 > p.max_half_width_pts:
        flags.append("wide_interval")
    if health.fade_pct_per_year is None:
        flags.append("no_trend")
    if health.soh_capacity_pct is None:
        flags.append("no_capacity_rating")
    age_years: float | None = None
    if spec.in_service_ms is not None and health.last_ms is not None:
        age_years = max(0.0, (health.last_ms - spec.in_service_ms) / _YEAR_MS)
    expected = 100.0 - p.reference_fade_pct_per_year * age_years if age_years is not None else None
    adjustment: float | None = None
    if expected is not None and soh is not None and low is not None:
        # Above expectation only the proven part (the lower bound) counts; below, the estimate.
        delta = max(0.0, low - expected) if soh > expected else soh - expected
        raw = p.value_pct_per_soh_pt * delta
        adjustment = max(-p.max_adjustment_pct, min(p.max_adjustment_pct, raw))
    km_left = None
    if health.odometer_km is not None:
        km_left = max(0.0, p.warranty_km - health.odometer_km)
    years_left = max(0.0, p.warranty_years - age_years) if age_years is not None else None
    stress = health.stress
    fade = 100.0 - health.soh_capacity_pct if health.soh_capacity_pct is not None else None
    if fade is None and soh is not None:
        fade = 100.0 - soh
    return ResidualScore(
        score_version=SCORE_VERSION,
        state_of_health_pct=_r(soh),
        state_of_health_low_pct=_r(low),
        state_of_health_high_pct=_r(high),
        state_of_health_capacity_pct=_r(health.soh_capacity_pct),
        rated_capacity_kwh=spec.nominal_kwh,
        remaining_capacity_kwh=_r(health.capacity_kwh),
        remaining_capacity_ah=_r(health.capacity_ah),
        capacity_fade_pct=_r(fade),
        fade_pct_per_year=_r(health.fade_pct_per_year, 2),
        date_soh_80=health.date_80,
        date_soh_70=health.date_70,
        expected_soh_pct=_r(expected),
        warranty_headroom_pts=_r(low - p.warranty_soh_pct if low is not None else None),
        warranty_years_left=_r(years_left, 2),
        warranty_km_left=_r(km_left, 0),
        second_life_grade=_grade(low, health, p),
        residual_value_adjustment_pct=_r(adjustment),
        energy_throughput_kwh=round(stress.charged_energy_kwh, 1),
        equivalent_full_cycles=round(stress.equivalent_full_cycles, 2),
        dc_fast_charge_share=round(stress.dc_share, 3),
        high_soc_share=round(stress.high_soc_share, 3),
        hours_extreme_temperature=round(stress.hot_hours, 1),
        deep_discharge_events=stress.deep_discharges,
        sessions_used=health.sessions_used,
        quality_flags=tuple(flags),
    )


def _r(value: float | None, digits: int = 1) -> float | None:
    return round(value, digits) if value is not None and math.isfinite(value) else None
