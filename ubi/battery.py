"""Traction-battery health from telemetry: charge sessions, state of health (SoH), fade and
stress exposure. A function over batches of samples (Arrow tables shaped like the archive's:
``vin``, ``ts`` and VSS columns), with a streaming state that gives exactly the same result
whether the samples come in one batch or in many.

Charge sessions
    A sample is *charging* when ``Charging.IsCharging`` is true; where that signal is null, when
    ``Charging.ChargeCurrent.DC`` or ``.Phase1`` carries current. A session is a run of charging
    samples with no gap longer than ``BatteryConfig.max_gap_s``. It is DC (fast) when most of its
    samples carry DC charge current or, without the charge-current signals, when its mean power
    is above ``dc_power_kw`` (AC on-board chargers stop at 22 kW).

State of health from partial charges
    Per session, the charge throughput ``Q(t) = ∫ I dt`` (Ah, pack current, trapezoid rule) and
    the energy throughput ``E(t) = ∫ V I dt`` (kWh) are computed, and the BMS state of charge is
    regressed on them over *every* sample of the session (ordinary least squares,
    ``SoC = a + b Q``). The slope gives the capacity: ``C_Ah = 100 / b`` and likewise
    ``C_kWh = 100 / b_E``. Regressing on all samples instead of taking the difference of the
    first and last reading filters the BMS's white noise and quantisation, and a constant SoC
    offset (a mis-anchored BMS) cancels. Capacity-based SoH is ``C_Ah`` over the rated Ah,
    energy-based SoH ``C_kWh`` over the rated kWh (``BatterySpec``); the energy-based one is the
    headline ``soh_pct`` (it is what UN GTR No. 22 calls the state of certified energy, and what
    the simulator's ground truth is).

    Uncertainty of one session: the slope's standard error from the residuals, plus a floor
    ``soc_floor_pct / ΔSoC`` for what regression cannot see (BMS non-linearity, slow drift), so
    a 60-point charge weighs far more than a 12-point top-up.

    Temperature: the mean of the cell temperature min/max over the session. Below
    ``reject_below_c`` the session is rejected (lithium plating risk and reversible capacity loss
    make the number meaningless); outside ``[cool_c, hot_c]`` its variance is multiplied by
    ``temp_variance_factor``. An optional linear correction to 25 °C
    (``capacity_temp_coeff_per_c``, fraction of capacity per °C below 25 °C) is off by default:
    with a temperature-compensated BMS SoC the residual effect is small, and the simulator has
    none.

    Outlier rejection, per session: too few samples, too short, a SoC window below
    ``min_soc_window_pct``, a poor fit (residual RMS above ``max_residual_pct``), or a SoH
    outside ``[40, 130] %``. Across sessions: a session more than ``outlier_z`` combined
    standard deviations from the weighted median is dropped before fusion.

Fusion
    Inverse-variance weighted mean of the accepted sessions in the last ``fusion_window_days``
    of data; its standard error is scaled by the Birge ratio ``sqrt(chi2 / dof)`` when the
    sessions scatter more than their own errors say, and never drops below ``systematic_pct``
    (calibration of the rated capacity, current-sensor gain). The interval is ±1.96 sigma.

Fade and projections
    ``fade_pct_per_year`` is the Theil–Sen slope of session SoH against time when the history
    spans at least ``min_trend_days``; otherwise, when the in-service date is known, the
    lifetime average ``(100 - SoH) / age``. Dates to 80 % and 70 % extrapolate linearly from
    the fused SoH at that rate (a first-order guide: real fade slows after the first years and
    can speed up past a knee).

Stress exposure (integer milliseconds, so batch splits cannot change a sum)
    Each sample's state is held until the next sample, for at most ``hold_max_s``: time at high
    SoC (``>= high_soc_pct``), hot hours (hottest cell ``>= hot_cell_c``), deep discharges
    (SoC falling below ``deep_discharge_pct``, counted once until it recovers above
    ``deep_discharge_rearm_pct``), DC fast-charge share of the charged energy, energy throughput
    and equivalent full cycles.

Samples of a vehicle must arrive in time order across batches: a sample not newer than the last
one seen for its VIN is dropped and counted (``BatteryHealth.dropped_samples``).

Checkpoints
    :meth:`BatteryHealthTracker.export_state` serialises each vehicle's complete
    :class:`BatteryHealthState` (closed sessions, the raw samples of the open session, the stress
    counters and the last sample's state) to msgpack bytes; :meth:`restore_state` loads it into
    another tracker, which continues exactly as the first would have. The ``BatterySpec`` and
    the configuration are not stored: a restored state gets the tracker's current ones (closed
    sessions keep the figures they were computed with).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from core.columns import column as _column
from core.columns import floats as _floats
from core.columns import timestamps_ms as _timestamps
from ubi.trips import (
    PackedArray,
    _vin_list,
    decode_state,
    encode_state,
    pack_arrays,
    unpack_arrays,
)

__all__ = [
    "BatteryConfig",
    "BatteryHealth",
    "BatteryHealthState",
    "BatteryHealthTracker",
    "BatterySpec",
    "ChargeSession",
    "StressExposure",
    "estimate_battery_health",
    "evaluate",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_TB = "Vehicle.Powertrain.TractionBattery."
SOC = _TB + "StateOfCharge.Current"
PACK_CURRENT = _TB + "CurrentCurrent"
PACK_VOLTAGE = _TB + "CurrentVoltage"
CELL_TEMP_MIN = _TB + "Temperature.Min"
CELL_TEMP_MAX = _TB + "Temperature.Max"
IS_CHARGING = _TB + "Charging.IsCharging"
CHARGE_CURRENT_DC = _TB + "Charging.ChargeCurrent.DC"
CHARGE_CURRENT_AC = _TB + "Charging.ChargeCurrent.Phase1"
ODOMETER = "Vehicle.TraveledDistance"
BATTERY_COLUMNS: tuple[str, ...] = (
    SOC,
    PACK_CURRENT,
    PACK_VOLTAGE,
    CELL_TEMP_MIN,
    CELL_TEMP_MAX,
    IS_CHARGING,
    CHARGE_CURRENT_DC,
    CHARGE_CURRENT_AC,
    ODOMETER,
)
"""The columns the estimator reads (besides ``vin`` and ``ts``)."""

_YEAR_MS = 365.25 * 86_400_000
_Z95 = 1.96


@dataclass(frozen=True)
class BatterySpec:
    """Rated (as-new) figures of one vehicle's pack, from the registry or the type approval."""

    nominal_kwh: float
    nominal_ah: float | None = None
    """Rated capacity in Ah; None: no capacity-based SoH."""
    in_service_ms: int | None = None
    """First registration (epoch ms); enables the lifetime-average fade."""


@dataclass(frozen=True)
class BatteryConfig:
    max_gap_s: float = 900.0
    dc_power_kw: float = 22.0
    min_samples: int = 8
    min_duration_s: float = 300.0
    min_soc_window_pct: float = 10.0
    max_residual_pct: float = 2.5
    soc_floor_pct: float = 0.5
    reject_below_c: float = 0.0
    cool_c: float = 10.0
    hot_c: float = 45.0
    temp_variance_factor: float = 4.0
    capacity_temp_coeff_per_c: float = 0.0
    outlier_z: float = 3.5
    fusion_window_days: float = 90.0
    systematic_pct: float = 0.3
    min_trend_days: float = 180.0
    hold_max_s: float = 6 * 3600.0
    high_soc_pct: float = 90.0
    hot_cell_c: float = 40.0
    deep_discharge_pct: float = 10.0
    deep_discharge_rearm_pct: float = 20.0
    min_sessions: int = 3


@dataclass(frozen=True)
class ChargeSession:
    start_ms: int
    end_ms: int
    samples: int
    dc: bool
    soc_start_pct: float
    """Fitted (regression) SoC at the start and end, not the raw readings."""
    soc_end_pct: float
    charge_ah: float
    energy_kwh: float
    mean_power_kw: float
    mean_cell_temp_c: float
    residual_pct: float
    """RMS of the SoC residuals around the fit: the BMS's SoC noise seen in this session."""
    capacity_kwh: float
    capacity_ah: float
    soh_energy_pct: float
    soh_capacity_pct: float
    sigma_pct: float
    """Standard deviation of ``soh_energy_pct``."""
    rejected: str | None
    """None when used for SoH, else the reason (``short``, ``small_window``, ``cold`` ...)."""

    @property
    def soc_window_pct(self) -> float:
        return self.soc_end_pct - self.soc_start_pct


@dataclass(frozen=True)
class StressExposure:
    observed_hours: float
    high_soc_hours: float
    hot_hours: float
    deep_discharges: int
    charged_energy_kwh: float
    dc_energy_kwh: float
    dc_sessions: int
    ac_sessions: int
    equivalent_full_cycles: float

    @property
    def dc_share(self) -> float:
        """Share of the charged energy that came from DC fast charging."""
        return self.dc_energy_kwh / self.charged_energy_kwh if self.charged_energy_kwh else 0.0

    @property
    def high_soc_share(self) -> float:
        return self.high_soc_hours / self.observed_hours if self.observed_hours else 0.0


@dataclass(frozen=True)
class BatteryHealth:
    vin: str
    nominal_kwh: float
    soh_pct: float | None
    """Energy-based state of health (state of certified energy), fused over sessions."""
    soh_sigma_pct: float | None
    soh_low_pct: float | None
    soh_high_pct: float | None
    soh_capacity_pct: float | None
    soh_capacity_sigma_pct: float | None
    capacity_kwh: float | None
    capacity_ah: float | None
    fade_pct_per_year: float | None
    fade_method: str | None
    """``trend`` (Theil–Sen over sessions), ``lifetime`` ((100 - SoH) / age) or None."""
    date_80: datetime | None
    date_70: datetime | None
    sessions_detected: int
    sessions_used: int
    rejected: dict[str, int]
    soc_noise_pct: float | None
    """Median per-session SoC residual RMS."""
    first_ms: int | None
    last_ms: int | None
    odometer_km: float | None
    stress: StressExposure
    dropped_samples: int


@dataclass
class _Buffers:
    """The raw samples of the open charge session (statistics are computed only when it
    closes, from the whole session at once, so batch boundaries cannot change them)."""

    parts: list[dict[str, np.ndarray]] = field(default_factory=list)


BATTERY_STATE_VERSION = 1
"""Format version of :meth:`BatteryHealthState.to_bytes` bytes."""
_BATTERY_STATE = "battery"
_OPEN_LAYOUT = {
    "ts": "<i8",
    "soc": "<f8",
    "current": "<f8",
    "voltage": "<f8",
    "temp_mean": "<f8",
    "temp_max": "<f8",
    "charging": "|b1",
    "dc": "|b1",
    "dc_known": "|b1",
}
"""The columns of an open session's samples (those of ``_arrays`` but the odometer)."""


class _SessionState(msgspec.Struct, array_like=True, frozen=True):
    """A :class:`ChargeSession`, field for field (in its order)."""

    start_ms: int
    end_ms: int
    samples: int
    dc: bool
    soc_start_pct: float
    soc_end_pct: float
    charge_ah: float
    energy_kwh: float
    mean_power_kw: float
    mean_cell_temp_c: float
    residual_pct: float
    capacity_kwh: float
    capacity_ah: float
    soh_energy_pct: float
    soh_capacity_pct: float
    sigma_pct: float
    rejected: str | None


class _BatteryVehicleState(msgspec.Struct, array_like=True, frozen=True):
    sessions: list[_SessionState]
    open: list[PackedArray] | None
    """The open session's samples (arrays of :data:`_OPEN_LAYOUT`), None when none is open."""
    first_ts: int | None
    last_ts: int | None
    last_charging: bool
    last_soc: float
    last_temp: float
    deep: bool
    deep_discharges: int
    observed_ms: int
    high_soc_ms: int
    hot_ms: int
    dropped: int
    odometer_m: float | None


def _session_state(s: ChargeSession) -> _SessionState:
    return _SessionState(
        start_ms=int(s.start_ms),
        end_ms=int(s.end_ms),
        samples=int(s.samples),
        dc=bool(s.dc),
        soc_start_pct=float(s.soc_start_pct),
        soc_end_pct=float(s.soc_end_pct),
        charge_ah=float(s.charge_ah),
        energy_kwh=float(s.energy_kwh),
        mean_power_kw=float(s.mean_power_kw),
        mean_cell_temp_c=float(s.mean_cell_temp_c),
        residual_pct=float(s.residual_pct),
        capacity_kwh=float(s.capacity_kwh),
        capacity_ah=float(s.capacity_ah),
        soh_energy_pct=float(s.soh_energy_pct),
        soh_capacity_pct=float(s.soh_capacity_pct),
        sigma_pct=float(s.sigma_pct),
        rejected=s.rejected,
    )


class BatteryHealthState:
    """Streaming state of one vehicle. Feed time-ordered batches with :meth:`update`, read the
    result with :meth:`report` (which does not consume anything)."""

    def __init__(self, vin: str, spec: BatterySpec, config: BatteryConfig | None = None) -> None:
        self.vin = vin
        self.spec = spec
        self.config = config or BatteryConfig()
        self.sessions: list[ChargeSession] = []
        self._open = _Buffers()
        self.last_ts: int | None = None
        self.first_ts: int | None = None
        self._last_charging = False
        self._last_soc = math.nan
        self._last_temp = math.nan
        self._deep = False
        self.deep_discharges = 0
        self.observed_ms = 0
        self.high_soc_ms = 0
        self.hot_ms = 0
        self.dropped = 0
        self.odometer_m: float | None = None

    # ------------------------------------------------------------------ input

    def update(self, table: pa.Table) -> list[ChargeSession]:
        """Add this vehicle's samples (a table holding only its rows); returns the sessions
        that closed."""
        cols = _arrays(table)
        ts = cols["ts"]
        order = np.argsort(ts, kind="stable")
        if not np.all(order == np.arange(len(ts))):
            cols = {k: v[order] for k, v in cols.items()}
            ts = cols["ts"]
        keep = np.ones(len(ts), dtype=bool)
        if len(ts):
            keep[1:] = ts[1:] > ts[:-1]
        if self.last_ts is not None:
            keep &= ts > self.last_ts
        self.dropped += int(len(ts) - keep.sum())
        if not keep.all():
            cols = {k: v[keep] for k, v in cols.items()}
            ts = cols["ts"]
        if not len(ts):
            return []
        self._stress(cols)
        closed = self._sessions(cols)
        self.sessions.extend(closed)
        self.last_ts = int(ts[-1])
        if self.first_ts is None:
            self.first_ts = int(ts[0])
        return closed

    def _stress(self, cols: dict[str, np.ndarray]) -> None:
        cfg = self.config
        ts, soc = cols["ts"], cols["soc"]
        temp = cols["temp_max"]
        prev_ts = np.empty_like(ts)
        prev_ts[1:] = ts[:-1]
        prev_soc = np.empty_like(soc)
        prev_soc[1:] = soc[:-1]
        prev_temp = np.empty_like(temp)
        prev_temp[1:] = temp[:-1]
        if self.last_ts is None:
            prev_ts[0] = ts[0]
            prev_soc[0] = prev_temp[0] = math.nan
        else:
            prev_ts[0] = self.last_ts
            prev_soc[0], prev_temp[0] = self._last_soc, self._last_temp
        held = np.minimum(ts - prev_ts, int(cfg.hold_max_s * 1000))
        self.observed_ms += int(held.sum())
        self.high_soc_ms += int(held[prev_soc >= cfg.high_soc_pct].sum())
        self.hot_ms += int(held[prev_temp >= cfg.hot_cell_c].sum())
        # Deep discharges: 1 below the threshold, 0 above the re-arm level, -1 in between
        # (keeps the previous state); count the 0 -> 1 transitions.
        level = np.where(soc < cfg.deep_discharge_pct, 1, np.where(
            soc > cfg.deep_discharge_rearm_pct, 0, -1))  # fmt: skip
        idx = np.where(level >= 0, np.arange(len(level)), -1)
        idx = np.maximum.accumulate(idx)
        state = np.where(idx >= 0, level[np.maximum(idx, 0)], int(self._deep))
        before = np.concatenate(([int(self._deep)], state[:-1]))
        self.deep_discharges += int(np.count_nonzero((state == 1) & (before == 0)))
        self._deep = bool(state[-1])
        self._last_soc = float(soc[-1])
        self._last_temp = float(temp[-1])
        odo = cols["odometer"]
        seen = np.flatnonzero(~np.isnan(odo))
        if len(seen):
            self.odometer_m = float(odo[seen[-1]])

    def _sessions(self, cols: dict[str, np.ndarray]) -> list[ChargeSession]:
        ts = cols["ts"]
        charging = cols["charging"]
        gap_ok = np.empty(len(ts), dtype=bool)
        gap_ok[1:] = (ts[1:] - ts[:-1]) <= self.config.max_gap_s * 1000
        gap_ok[0] = (
            self.last_ts is not None and ts[0] - self.last_ts <= self.config.max_gap_s * 1000
        )
        prev_charging = np.empty(len(ts), dtype=bool)
        prev_charging[1:] = charging[:-1]
        prev_charging[0] = self._last_charging
        cont = charging & prev_charging & gap_ok
        # A run ends after sample i when sample i is charging and i + 1 does not continue it.
        ends = np.flatnonzero(charging & ~np.append(cont[1:], True))
        starts = np.flatnonzero(charging & ~cont)
        closed: list[ChargeSession] = []
        first_break = np.flatnonzero(~cont)
        open_end = int(first_break[0]) if len(first_break) else len(ts)
        if self._open.parts:
            # The open session continues up to the first sample that does not continue it.
            self._open.parts.append(_slice(cols, 0, open_end))
            if open_end < len(ts):
                closed.append(self._close())
        for s in starts.tolist():
            e_candidates = ends[ends >= s]
            e = int(e_candidates[0]) + 1 if len(e_candidates) else len(ts)
            self._open.parts.append(_slice(cols, s, e))
            if e < len(ts):
                closed.append(self._close())
        self._last_charging = bool(charging[-1])
        return closed

    def _close(self) -> ChargeSession:
        parts = self._open.parts
        self._open = _Buffers()
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return _session(merged, self.spec, self.config)

    # ------------------------------------------------------------------ output

    def all_sessions(self) -> list[ChargeSession]:
        """Closed sessions, plus the open one as if it ended now."""
        sessions = list(self.sessions)
        if self._open.parts:
            parts = self._open.parts
            merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            sessions.append(_session(merged, self.spec, self.config))
        return sessions

    def report(self) -> BatteryHealth:
        return _report(self, self.all_sessions())

    # ------------------------------------------------------------------ checkpoints

    def to_bytes(self) -> bytes:
        """The complete state as msgpack bytes (format :data:`BATTERY_STATE_VERSION`), without
        the spec and the configuration."""
        parts = self._open.parts
        opened = None
        if parts:
            merged = {k: np.concatenate([p[k] for p in parts]) for k in _OPEN_LAYOUT}
            opened = pack_arrays(merged, _OPEN_LAYOUT)
        state = _BatteryVehicleState(
            sessions=[_session_state(s) for s in self.sessions],
            open=opened,
            first_ts=None if self.first_ts is None else int(self.first_ts),
            last_ts=None if self.last_ts is None else int(self.last_ts),
            last_charging=bool(self._last_charging),
            last_soc=float(self._last_soc),
            last_temp=float(self._last_temp),
            deep=bool(self._deep),
            deep_discharges=int(self.deep_discharges),
            observed_ms=int(self.observed_ms),
            high_soc_ms=int(self.high_soc_ms),
            hot_ms=int(self.hot_ms),
            dropped=int(self.dropped),
            odometer_m=None if self.odometer_m is None else float(self.odometer_m),
        )
        return encode_state(_BATTERY_STATE, BATTERY_STATE_VERSION, self.vin, state)

    @classmethod
    def from_bytes(
        cls, vin: str, spec: BatterySpec, data: bytes, config: BatteryConfig | None = None
    ) -> BatteryHealthState:
        """A state from :meth:`to_bytes`, with this spec and configuration. ``ValueError`` on
        malformed bytes or an unknown format version."""
        return cls._from_payload(vin, spec, _decode_battery(vin, data), config)

    @classmethod
    def _from_payload(
        cls,
        vin: str,
        spec: BatterySpec,
        payload: _BatteryVehicleState,
        config: BatteryConfig | None,
        opened: dict[str, np.ndarray] | None = None,
    ) -> BatteryHealthState:
        state = cls(vin, spec, config)
        state.sessions = [ChargeSession(*msgspec.structs.astuple(s)) for s in payload.sessions]
        if payload.open is not None:
            if opened is None:
                opened = unpack_arrays(payload.open, _OPEN_LAYOUT, f"battery state of {vin!r}")
            state._open = _Buffers([opened])
        state.first_ts = payload.first_ts
        state.last_ts = payload.last_ts
        state._last_charging = payload.last_charging
        state._last_soc = payload.last_soc
        state._last_temp = payload.last_temp
        state._deep = payload.deep
        state.deep_discharges = payload.deep_discharges
        state.observed_ms = payload.observed_ms
        state.high_soc_ms = payload.high_soc_ms
        state.hot_ms = payload.hot_ms
        state.dropped = payload.dropped
        state.odometer_m = payload.odometer_m
        return state


def _decode_battery(vin: str, data: bytes) -> _BatteryVehicleState:
    return decode_state(_BATTERY_STATE, BATTERY_STATE_VERSION, vin, data, _BatteryVehicleState)


class BatteryHealthTracker:
    """Streaming state of a fleet: routes each VIN's rows to its :class:`BatteryHealthState`.
    ``specs`` gives the rated figures of a VIN (None: the vehicle is not a BEV we track)."""

    def __init__(
        self,
        specs: Mapping[str, BatterySpec] | Callable[[str], BatterySpec | None],
        config: BatteryConfig | None = None,
    ) -> None:
        self._specs = specs
        self.config = config or BatteryConfig()
        self.states: dict[str, BatteryHealthState] = {}

    def _spec(self, vin: str) -> BatterySpec | None:
        if callable(self._specs):
            return self._specs(vin)
        return self._specs.get(vin)

    def update(self, table: pa.Table) -> dict[str, list[ChargeSession]]:
        """Add a batch (any VINs, any order within a VIN); returns the sessions that closed."""
        out: dict[str, list[ChargeSession]] = {}
        for vin, rows in _split_by_vin(table):
            state = self.states.get(vin)
            if state is None:
                spec = self._spec(vin)
                if spec is None:
                    continue
                state = self.states[vin] = BatteryHealthState(vin, spec, self.config)
            closed = state.update(rows)
            if closed:
                out[vin] = closed
        return out

    def reports(self) -> dict[str, BatteryHealth]:
        return {vin: state.report() for vin, state in sorted(self.states.items())}

    # ------------------------------------------------------------------ checkpoints

    def state_vins(self) -> list[str]:
        """The VINs this tracker holds state for (sorted)."""
        return sorted(self.states)

    def export_state(self, vins: Iterable[str]) -> dict[str, bytes]:
        """The complete state of these vehicles, one msgpack blob per VIN (see
        :meth:`BatteryHealthState.to_bytes`); VINs without state are left out."""
        return {vin: self.states[vin].to_bytes() for vin in _vin_list(vins) if vin in self.states}

    def restore_state(self, states: Mapping[str, bytes]) -> None:
        """Load states from :meth:`export_state`, replacing those vehicles' in-memory state;
        each gets the spec the tracker has for its VIN now, and a VIN whose spec is None is
        skipped (and not tracked afterwards). Raises ``ValueError`` (and changes nothing) when
        any blob is malformed or of an unknown format version."""
        decoded: dict[str, tuple[_BatteryVehicleState, dict[str, np.ndarray] | None]] = {}
        for vin, data in states.items():
            payload = _decode_battery(vin, data)
            opened = None
            if payload.open is not None:
                opened = unpack_arrays(payload.open, _OPEN_LAYOUT, f"battery state of {vin!r}")
            decoded[vin] = payload, opened
        for vin, (payload, opened) in decoded.items():
            spec = self._spec(vin)
            if spec is None:
                self.states.pop(vin, None)
                continue
            self.states[vin] = BatteryHealthState._from_payload(
                vin, spec, payload, self.config, opened
            )

    def forget(self, vins: Iterable[str]) -> None:
        """Drop the in-memory state of these vehicles."""
        for vin in _vin_list(vins):
            self.states.pop(vin, None)


def estimate_battery_health(
    table: pa.Table,
    specs: Mapping[str, BatterySpec] | Callable[[str], BatterySpec | None],
    config: BatteryConfig | None = None,
) -> dict[str, BatteryHealth]:
    """The batch form: one table in, one report per tracked VIN out."""
    tracker = BatteryHealthTracker(specs, config)
    tracker.update(table)
    return tracker.reports()


# ---------------------------------------------------------------------- columns


def _arrays(table: pa.Table) -> dict[str, np.ndarray]:
    flag = _floats(table, IS_CHARGING)
    dc_current = np.nan_to_num(_floats(table, CHARGE_CURRENT_DC))
    ac_current = np.nan_to_num(_floats(table, CHARGE_CURRENT_AC))
    dc = np.abs(dc_current) > 1.0
    fallback = dc | (np.abs(ac_current) > 0.5)
    charging = np.where(np.isnan(flag), fallback, flag > 0.5)
    t_min, t_max = _floats(table, CELL_TEMP_MIN), _floats(table, CELL_TEMP_MAX)
    return {
        "ts": _timestamps(table),
        "soc": _floats(table, SOC),
        "current": _floats(table, PACK_CURRENT),
        "voltage": _floats(table, PACK_VOLTAGE),
        "temp_mean": (t_min + t_max) / 2.0,
        "temp_max": t_max,
        "charging": charging.astype(bool),
        "dc": dc,
        "dc_known": ~(np.isnan(_floats(table, CHARGE_CURRENT_DC))),
        "odometer": _floats(table, ODOMETER),
    }


def _slice(cols: dict[str, np.ndarray], start: int, end: int) -> dict[str, np.ndarray]:
    return {k: v[start:end] for k, v in cols.items() if k != "odometer"}


def _split_by_vin(table: pa.Table) -> list[tuple[str, pa.Table]]:
    if table.num_rows == 0:
        return []
    vins = _column(table, "vin")
    if vins is None:
        raise ValueError("the table has no 'vin' column")
    order = pc.sort_indices(table, sort_keys=[("vin", "ascending"), ("ts", "ascending")])
    ordered = table.take(order)
    values = np.asarray(ordered["vin"].to_numpy(zero_copy_only=False), dtype=object)
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(values)]
    return [
        (str(values[a]), ordered.slice(a, b - a))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


# ---------------------------------------------------------------------- one session


def _fit(x: FloatArray, y: FloatArray) -> tuple[float, float, float, float]:
    """OLS ``y = a + b x``: (a, b, standard error of b, residual RMS)."""
    n = len(x)
    xm, ym = x.mean(), y.mean()
    dx = x - xm
    sxx = float(dx @ dx)
    if sxx <= 0 or n < 3:
        return math.nan, math.nan, math.nan, math.nan
    b = float(dx @ (y - ym)) / sxx
    a = float(ym - b * xm)
    resid = y - (a + b * x)
    rss = float(resid @ resid)
    se = math.sqrt(rss / (n - 2) / sxx)
    return a, b, se, math.sqrt(rss / n)


def _session(cols: dict[str, np.ndarray], spec: BatterySpec, cfg: BatteryConfig) -> ChargeSession:
    ts = cols["ts"]
    ok = ~(np.isnan(cols["soc"]) | np.isnan(cols["current"]) | np.isnan(cols["voltage"]))
    t = (ts[ok] - ts[0]) / 1000.0
    soc, current, voltage = cols["soc"][ok], cols["current"][ok], cols["voltage"][ok]
    temp = cols["temp_mean"][ok]
    n = len(t)
    dc_known = cols["dc_known"]
    dt = np.diff(t)
    power = voltage * current
    charge = np.concatenate(([0.0], np.cumsum((current[1:] + current[:-1]) / 2.0 * dt))) / 3600
    energy = np.concatenate(([0.0], np.cumsum((power[1:] + power[:-1]) / 2.0 * dt))) / 3.6e6
    duration = float(t[-1]) if n else 0.0
    mean_power = float(energy[-1] / (duration / 3600.0)) if n and duration > 0 else 0.0
    # Most samples carrying DC charge current; without that signal, the mean power.
    dc = (
        bool(cols["dc"][dc_known].mean() > 0.5)
        if dc_known.any()
        else (mean_power > cfg.dc_power_kw)
    )
    mean_temp = float(np.nanmean(temp)) if n and not np.isnan(temp).all() else math.nan
    a_q, b_q, se_q, resid = _fit(charge, soc) if n >= 3 else (math.nan,) * 4
    a_e, b_e, se_e, _ = _fit(energy, soc) if n >= 3 else (math.nan,) * 4
    soc_start = a_q if n >= 3 else math.nan
    soc_end = a_q + b_q * float(charge[-1]) if n >= 3 else math.nan
    window = soc_end - soc_start
    cap_kwh = 100.0 / b_e if b_e and b_e > 0 else math.nan
    cap_ah = 100.0 / b_q if b_q and b_q > 0 else math.nan
    if cfg.capacity_temp_coeff_per_c and not math.isnan(mean_temp) and mean_temp < 25.0:
        factor = 1.0 - cfg.capacity_temp_coeff_per_c * (25.0 - mean_temp)
        cap_kwh, cap_ah = cap_kwh / factor, cap_ah / factor
    soh_e = 100.0 * cap_kwh / spec.nominal_kwh
    soh_q = 100.0 * cap_ah / spec.nominal_ah if spec.nominal_ah else math.nan
    rel_var = (se_e / b_e) ** 2 + (cfg.soc_floor_pct / window) ** 2 if window > 0 else math.inf
    if not math.isnan(mean_temp) and not cfg.cool_c <= mean_temp <= cfg.hot_c:
        rel_var *= cfg.temp_variance_factor
    sigma = soh_e * math.sqrt(rel_var) if math.isfinite(rel_var) else math.inf
    reason: str | None = None
    if n < cfg.min_samples or duration < cfg.min_duration_s:
        reason = "short"
    elif not math.isfinite(soh_e) or not window > 0:
        reason = "no_fit"
    elif window < cfg.min_soc_window_pct:
        reason = "small_window"
    elif not math.isnan(mean_temp) and mean_temp < cfg.reject_below_c:
        reason = "cold"
    elif resid > cfg.max_residual_pct:
        reason = "noisy"
    elif not 40.0 <= soh_e <= 130.0:
        reason = "implausible"
    return ChargeSession(
        start_ms=int(ts[0]),
        end_ms=int(ts[-1]),
        samples=int(len(ts)),
        dc=dc,
        soc_start_pct=soc_start,
        soc_end_pct=soc_end,
        charge_ah=float(charge[-1]) if n else 0.0,
        energy_kwh=float(energy[-1]) if n else 0.0,
        mean_power_kw=mean_power,
        mean_cell_temp_c=mean_temp,
        residual_pct=resid,
        capacity_kwh=cap_kwh,
        capacity_ah=cap_ah,
        soh_energy_pct=soh_e,
        soh_capacity_pct=soh_q,
        sigma_pct=sigma,
        rejected=reason,
    )


# ---------------------------------------------------------------------- fusion and report


def _weighted_median(x: FloatArray, w: FloatArray) -> float:
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, cw[-1] / 2.0)])


def _fuse(x: FloatArray, sigma: FloatArray, cfg: BatteryConfig) -> tuple[float, float, BoolArray]:
    """Inverse-variance mean, its (Birge-scaled, floored) sigma, and the inlier mask."""
    w = 1.0 / sigma**2
    med = _weighted_median(x, w)
    mad = 1.4826 * _weighted_median(np.abs(x - med), w)
    inlier = np.abs(x - med) <= cfg.outlier_z * np.sqrt(sigma**2 + mad**2)
    xi, wi = x[inlier], w[inlier]
    mean = float(xi @ wi / wi.sum())
    se = 1.0 / math.sqrt(float(wi.sum()))
    if len(xi) > 1:
        chi2 = float(((xi - mean) ** 2) @ wi)
        se *= max(1.0, math.sqrt(chi2 / (len(xi) - 1)))
    return mean, math.hypot(se, cfg.systematic_pct), inlier


def _theil_sen(t_years: FloatArray, y: FloatArray) -> float:
    i, j = np.triu_indices(len(t_years), k=1)
    dt = t_years[j] - t_years[i]
    good = dt > 1e-6
    return float(np.median((y[j] - y[i])[good] / dt[good])) if good.any() else math.nan


def _project(soh: float, fade: float | None, now_ms: int, level: float) -> datetime | None:
    if fade is None or not fade > 0 or soh <= level:
        return None
    years = (soh - level) / fade
    if years > 100:
        return None
    return datetime.fromtimestamp(now_ms / 1000, UTC) + timedelta(days=years * 365.25)


def _report(state: BatteryHealthState, sessions: list[ChargeSession]) -> BatteryHealth:
    cfg, spec = state.config, state.spec
    rejected: dict[str, int] = {}
    for s in sessions:
        if s.rejected is not None:
            rejected[s.rejected] = rejected.get(s.rejected, 0) + 1
    good = [s for s in sessions if s.rejected is None]
    if good and state.last_ts is not None:
        horizon = max(s.end_ms for s in good) - cfg.fusion_window_days * 86_400_000
        recent = [s for s in good if s.end_ms >= horizon]
    else:
        recent = []
    soh = sigma = soh_q = sigma_q = None
    used = 0
    if recent:
        x = np.array([s.soh_energy_pct for s in recent])
        sig = np.array([s.sigma_pct for s in recent])
        soh, sigma, inlier = _fuse(x, sig, cfg)
        used = int(inlier.sum())
        rejected["outlier"] = rejected.get("outlier", 0) + int((~inlier).sum())
        if not rejected["outlier"]:
            del rejected["outlier"]
        xq = np.array([s.soh_capacity_pct for s in recent])[inlier]
        if np.isfinite(xq).all():
            # Same relative uncertainty per session as the energy-based figure.
            sq = (sig * xq / np.maximum(x, 1e-9))[inlier] if len(xq) else sig
            soh_q, sigma_q, _ = _fuse(xq, sq, replace(cfg, outlier_z=math.inf))
    fade: float | None = None
    method: str | None = None
    if len(good) >= cfg.min_sessions and state.first_ts is not None:
        t = np.array([s.end_ms for s in good], dtype=float) / _YEAR_MS
        if (t[-1] - t[0]) * 365.25 >= cfg.min_trend_days:
            slope = _theil_sen(t[-500:], np.array([s.soh_energy_pct for s in good])[-500:])
            if math.isfinite(slope):
                fade, method = -slope, "trend"
    if fade is None and soh is not None and spec.in_service_ms is not None and state.last_ts:
        age_years = (state.last_ts - spec.in_service_ms) / _YEAR_MS
        if age_years >= 0.25:
            fade, method = max(0.0, 100.0 - soh) / age_years, "lifetime"
    now = state.last_ts or 0
    charged = sum(s.energy_kwh for s in sessions)
    dc_energy = sum(s.energy_kwh for s in sessions if s.dc)
    stress = StressExposure(
        observed_hours=state.observed_ms / 3.6e6,
        high_soc_hours=state.high_soc_ms / 3.6e6,
        hot_hours=state.hot_ms / 3.6e6,
        deep_discharges=state.deep_discharges,
        charged_energy_kwh=charged,
        dc_energy_kwh=dc_energy,
        dc_sessions=sum(1 for s in sessions if s.dc),
        ac_sessions=sum(1 for s in sessions if not s.dc),
        equivalent_full_cycles=charged / spec.nominal_kwh if spec.nominal_kwh else 0.0,
    )
    noise = [s.residual_pct for s in sessions if math.isfinite(s.residual_pct)]
    return BatteryHealth(
        vin=state.vin,
        nominal_kwh=spec.nominal_kwh,
        soh_pct=soh,
        soh_sigma_pct=sigma,
        soh_low_pct=soh - _Z95 * sigma if soh is not None and sigma is not None else None,
        soh_high_pct=soh + _Z95 * sigma if soh is not None and sigma is not None else None,
        soh_capacity_pct=soh_q,
        soh_capacity_sigma_pct=sigma_q,
        capacity_kwh=spec.nominal_kwh * soh / 100.0 if soh is not None else None,
        capacity_ah=(
            spec.nominal_ah * soh_q / 100.0 if soh_q is not None and spec.nominal_ah else None
        ),  # fmt: skip
        fade_pct_per_year=fade,
        fade_method=method,
        date_80=_project(soh, fade, now, 80.0) if soh is not None else None,
        date_70=_project(soh, fade, now, 70.0) if soh is not None else None,
        sessions_detected=len(sessions),
        sessions_used=used,
        rejected=dict(sorted(rejected.items())),
        soc_noise_pct=float(np.median(noise)) if noise else None,
        first_ms=state.first_ts,
        last_ms=state.last_ts,
        odometer_km=state.odometer_m / 1000.0 if state.odometer_m is not None else None,
        stress=stress,
        dropped_samples=state.dropped,
    )


# ---------------------------------------------------------------------- evaluation


RATED_CELL_V = 3.70
"""Nominal voltage of a lithium-ion (NMC) cell: rated Ah = rated kWh / (cells in series x
this), for simulated packs here and for the model catalog (``ubi/battery_specs.py``)."""


def simulate_table(
    seed: int,
    vehicles: int,
    days: float,
    *,
    sample_interval_s: float = 30.0,
    parked_sample_interval_s: float = 600.0,
    noise: bool = True,
) -> tuple[pa.Table, dict[str, BatterySpec], dict[str, float]]:
    """A simulated BEV fleet as an archive-like table, the rated specs and the true SoH.

    True SoH is drawn uniformly from [72, 98] % per vehicle (so the error is measured across
    the range, not around one value). The simulator's BMS is perfect (its SoC is the energy
    counter itself), so with ``noise`` this harness degrades the readings the way a real BMS
    and its sensors do, from a stream seeded by ``seed``:

    * SoC: an offset re-drawn at every charge start (BMS re-anchoring after a rest,
      sigma 2 points), a slow random walk (0.15 points per sqrt(hour)), white noise (0.3 points)
      and quantisation to 0.1 points;
    * pack current: white noise 0.5 A and quantisation to 0.1 A; pack voltage: white noise
      0.5 V, quantisation to 0.1 V.

    Not modelled: a BMS SoC gain error or a current-sensor offset (both bias every session the
    same way; they are covered by the ``systematic_pct`` floor, not estimated).
    """
    import dataclasses

    from core.telemetry import Sample
    from simulator.fleet import make_fleet
    from simulator.vehicle import VehicleSim

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xBA77]))
    fleet = make_fleet(vehicles, seed, bev_share=1.0, commercial_share=0.25)
    start_ms = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000)
    n_samples = int(days * 86_400 / sample_interval_s)
    specs: dict[str, BatterySpec] = {}
    truth: dict[str, float] = {}
    tables: list[pa.Table] = []
    for base in fleet:
        profile = dataclasses.replace(base, battery_soh_pct=float(rng.uniform(72.0, 98.0)))
        truth[profile.vin] = profile.battery_soh_pct
        specs[profile.vin] = BatterySpec(
            nominal_kwh=profile.battery_kwh,
            nominal_ah=profile.battery_kwh * 1000.0 / (profile.cells_series * RATED_CELL_V),
        )
        sim = VehicleSim(
            profile,
            start_ms=start_ms,
            run_seed=seed,
            sample_interval_s=sample_interval_s,
            parked_sample_interval_s=parked_sample_interval_s,
        )
        end_ms = start_ms + int(days * 86_400_000)
        samples: list[Sample] = []
        while True:
            chunk = sim.advance(2_000)
            samples.extend(s for s in chunk if s.ts < end_ms)
            if chunk[-1].ts >= end_ms or len(samples) > n_samples:
                break
        columns: dict[str, pa.Array] = {
            "vin": pa.array([profile.vin] * len(samples), pa.string()),
            "ts": pa.array([s.ts for s in samples], pa.int64()).cast(pa.timestamp("ms", "UTC")),
        }
        for name in BATTERY_COLUMNS:
            values = [s.signals.get(name) for s in samples]
            typ = pa.bool_() if name == IS_CHARGING else pa.float64()
            columns[name] = pa.array(values, typ)
        table = pa.table(columns)
        if noise:
            table = _degrade(table, rng)
        tables.append(table)
    return pa.concat_tables(tables), specs, truth


def _degrade(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    ts = _timestamps(table)
    soc = _floats(table, SOC)
    charging = np.nan_to_num(_floats(table, IS_CHARGING)) > 0.5
    n = len(ts)
    starts = charging & ~np.concatenate(([False], charging[:-1]))
    offset = rng.normal(0.0, 2.0, int(starts.sum()) + 1)[np.cumsum(starts)]
    hours = np.diff(ts, prepend=ts[0]) / 3.6e6
    walk = np.cumsum(rng.normal(0.0, 1.0, n) * 0.15 * np.sqrt(np.minimum(hours, 24.0)))
    # The walk restarts with each charge (the offset above is the re-anchoring error).
    anchor = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    walk = walk - np.concatenate((np.zeros(1), walk))[anchor]
    reported_soc = np.round(np.clip(soc + offset + walk + rng.normal(0, 0.3, n), 0, 100), 1)
    current = np.round(_floats(table, PACK_CURRENT) + rng.normal(0, 0.5, n), 1)
    voltage = np.round(_floats(table, PACK_VOLTAGE) + rng.normal(0, 0.5, n), 1)
    for name, values in ((SOC, reported_soc), (PACK_CURRENT, current), (PACK_VOLTAGE, voltage)):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    return table


def evaluate(
    seed: int,
    vehicles: int,
    days: float,
    *,
    sample_interval_s: float = 30.0,
    config: BatteryConfig | None = None,
) -> dict[str, float | int]:
    """Mean absolute error (points) of the fused SoH against the simulator's ground truth, on a
    fresh simulated fleet with the BMS noise of :func:`simulate_table`."""
    table, specs, truth = simulate_table(seed, vehicles, days, sample_interval_s=sample_interval_s)
    reports = estimate_battery_health(table, specs, config)
    errors = [abs(r.soh_pct - truth[vin]) for vin, r in reports.items() if r.soh_pct is not None]
    errors_q = [
        abs(r.soh_capacity_pct - truth[vin])
        for vin, r in reports.items()
        if r.soh_capacity_pct is not None
    ]
    covered = [
        r.soh_low_pct <= truth[vin] <= r.soh_high_pct
        for vin, r in reports.items()
        if r.soh_low_pct is not None and r.soh_high_pct is not None
    ]
    return {
        "vehicles": vehicles,
        "vehicles_estimated": len(errors),
        "samples": table.num_rows,
        "sessions_detected": sum(r.sessions_detected for r in reports.values()),
        "sessions_used": sum(r.sessions_used for r in reports.values()),
        "mae_soh_pts": float(np.mean(errors)) if errors else math.nan,
        "max_error_pts": float(np.max(errors)) if errors else math.nan,
        "mae_soh_capacity_pts": float(np.mean(errors_q)) if errors_q else math.nan,
        "interval_coverage": float(np.mean(covered)) if covered else math.nan,
    }
