"""Fault injection with ground truth.

Each fault has an onset and a failure time (simulated seconds after the start of the
simulation). Between them a latent degradation ``progress`` grows linearly from 0 to 1; the
vehicle model turns it into signal signatures and diagnostic trouble codes (DTCs):

============== ======= ===================================================================
kind           applies signature (thresholds below)
============== ======= ===================================================================
tire_leak      all     cold pressure of one tire falls from placard to 75 % of placard at
                       failure (the FMVSS 138 TPMS warning level) and keeps falling
coolant_pump   ICE     the running coolant temperature climbs ``COOLANT_RISE_C`` above the
                       thermostat set point by failure; DTC P2181 (cooling system
                       performance) at 108 C, P0217 (engine over-temperature) at 118 C
weak_12v       all     resting 12 V voltage declines by 0.9 V by failure, cranking dips
                       deepen; DTC P0562 (system voltage low) once a resting reading is
                       below 11.9 V (near the end)
brake_pad      all     one pad wears (VSS ``PadWear``: 0 = new, 100 = worn) far faster than
                       braking explains and reaches ``PAD_WEAR_FAILURE_PCT`` at failure
cell_imbalance BEV     spread between max and min cell voltage grows to 150 mV by failure
                       (more under load); DTC P0AFA (EV battery system voltage low) once the
                       spread reaches 120 mV
============== ======= ===================================================================

P0118 (coolant sensor circuit high) is a sensor-circuit code that a failing pump does not set,
so the over-temperature codes above are used instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from simulator import vss

TIRE_LOW_FRACTION = 0.75
"""TPMS warning level: 25 % below the placard pressure (FMVSS 138)."""
TIRE_MIN_COLD_KPA = 30.0
COOLANT_SETPOINT_C = 90.0
COOLANT_RISE_C = 36.0
DTC_COOLANT_PERFORMANCE = "P2181"
DTC_COOLANT_OVERTEMP = "P0217"
COOLANT_PERFORMANCE_C = 108.0
COOLANT_OVERTEMP_C = 118.0
LV_REST_DROP_V = 0.9
LV_LOW_V = 11.9
DTC_LV_LOW = "P0562"
PAD_WEAR_FAILURE_PCT = 90.0
"""A pad this worn (about 1 mm of friction material left) counts as failed."""
CELL_SPREAD_FAILURE_V = 0.150
CELL_SPREAD_DTC_V = 0.120
DTC_CELL = "P0AFA"


class FaultKind(StrEnum):
    TIRE_LEAK = "tire_leak"
    COOLANT_PUMP = "coolant_pump_failure"
    WEAK_LV_BATTERY = "weak_12v_battery"
    BRAKE_PAD_WEAR = "brake_pad_wear"
    CELL_IMBALANCE = "cell_imbalance"


BEV_KINDS = (
    FaultKind.TIRE_LEAK,
    FaultKind.WEAK_LV_BATTERY,
    FaultKind.BRAKE_PAD_WEAR,
    FaultKind.CELL_IMBALANCE,
)
ICE_KINDS = (
    FaultKind.TIRE_LEAK,
    FaultKind.COOLANT_PUMP,
    FaultKind.WEAK_LV_BATTERY,
    FaultKind.BRAKE_PAD_WEAR,
)
_WHEEL_KINDS = (FaultKind.TIRE_LEAK, FaultKind.BRAKE_PAD_WEAR)

DTCS: dict[FaultKind, tuple[str, ...]] = {
    FaultKind.TIRE_LEAK: (),
    FaultKind.COOLANT_PUMP: (DTC_COOLANT_PERFORMANCE, DTC_COOLANT_OVERTEMP),
    FaultKind.WEAK_LV_BATTERY: (DTC_LV_LOW,),
    FaultKind.BRAKE_PAD_WEAR: (),
    FaultKind.CELL_IMBALANCE: (DTC_CELL,),
}
"""The DTCs each fault can set (empty: the signature is in the signals only)."""


def kinds_for(bev: bool) -> tuple[FaultKind, ...]:
    return BEV_KINDS if bev else ICE_KINDS


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault. Times are simulated seconds after the simulation start."""

    kind: FaultKind
    onset_s: float
    failure_s: float
    wheel: str | None = None
    """For tire and brake faults: one of ``simulator.vss.WHEELS`` (e.g. ``"Row1.Wheel.Left"``)."""

    def __post_init__(self) -> None:
        if self.failure_s <= self.onset_s:
            raise ValueError("failure_s must be after onset_s")
        if self.onset_s < 0:
            raise ValueError("onset_s must be >= 0")
        if (self.kind in _WHEEL_KINDS) != (self.wheel is not None):
            raise ValueError(f"{self.kind} needs a wheel" if self.wheel is None else "no wheel")
        if self.wheel is not None and self.wheel not in vss.WHEELS:
            raise ValueError(f"unknown wheel {self.wheel!r}; one of {vss.WHEELS}")

    @property
    def component(self) -> str:
        match self.kind:
            case FaultKind.TIRE_LEAK:
                return f"tire.{_wheel_slug(self.wheel)}"
            case FaultKind.BRAKE_PAD_WEAR:
                return f"brake_pad.{_wheel_slug(self.wheel)}"
            case FaultKind.COOLANT_PUMP:
                return "engine.coolant_pump"
            case FaultKind.WEAK_LV_BATTERY:
                return "low_voltage_battery"
            case FaultKind.CELL_IMBALANCE:
                return "traction_battery.cells"

    @property
    def signal(self) -> str:
        """The VSS signal that carries the signature."""
        match self.kind:
            case FaultKind.TIRE_LEAK:
                return vss.tire_pressure(self.wheel or "")
            case FaultKind.BRAKE_PAD_WEAR:
                return vss.brake_pad_wear(self.wheel or "")
            case FaultKind.COOLANT_PUMP:
                return vss.COOLANT_TEMPERATURE
            case FaultKind.WEAK_LV_BATTERY:
                return vss.LV_BATTERY_VOLTAGE
            case FaultKind.CELL_IMBALANCE:
                return vss.CELL_VOLTAGE_MIN

    def progress(self, t_s: np.ndarray | float, *, cap: float = 1.0) -> np.ndarray:
        """Latent degradation at simulated time(s) ``t_s``: 0 before onset, 1 at failure, up to
        ``cap`` after it."""
        p = (np.asarray(t_s, dtype=float) - self.onset_s) / (self.failure_s - self.onset_s)
        return np.clip(p, 0.0, cap)


def _wheel_slug(wheel: str | None) -> str:
    return (wheel or "").replace(".Wheel.", ".").lower()


def random_fault(
    kind: FaultKind, rng: np.random.Generator, horizon_s: float, *, min_onset_s: float = 0.0
) -> FaultSpec:
    """A fault of ``kind`` whose onset and failure both fall inside ``[min_onset_s, horizon_s]``:
    onset in the first half, failure 25-50 % of the horizon later."""
    span = horizon_s - min_onset_s
    onset = min_onset_s + float(rng.uniform(0.02, 0.45)) * span
    failure = min(horizon_s, onset + float(rng.uniform(0.25, 0.5)) * span)
    wheel = str(rng.choice(vss.WHEELS)) if kind in _WHEEL_KINDS else None
    return FaultSpec(kind=kind, onset_s=round(onset, 1), failure_s=round(failure, 1), wheel=wheel)
