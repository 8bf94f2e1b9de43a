"""The virtual fleet: vehicle profiles as plain, frozen dataclasses (VIN, model, model year,
region, time zone, ECU inventory, physical parameters and injected faults), deterministic for
a seed. Makes and models are fictional; VINs are valid ISO 3779 VINs with a correct check
digit (``core.vin.make_vin``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from core.vin import make_vin
from simulator import vss
from simulator.climate import REGIONS, Region
from simulator.faults import FaultKind, FaultSpec, kinds_for, random_fault

DEFAULT_FAULT_HORIZON_S = 7 * 86_400.0


class Powertrain(StrEnum):
    BEV = "BEV"
    ICE = "ICE"

    @property
    def vss_type(self) -> str:
        """The value of the VSS attribute ``Vehicle.Powertrain.Type``."""
        return "ELECTRIC" if self is Powertrain.BEV else "COMBUSTION"


class Usage(StrEnum):
    PRIVATE = "private"
    """Commute on workdays, errands in the evening, outings and the odd long trip at weekends,
    in the vehicle's local time."""
    COMMERCIAL = "commercial"
    """Taxi or delivery around the clock: short trips back to back with short stops."""


@dataclass(frozen=True)
class Ecu:
    ecu_id: str
    hardware_id: str
    software_version: str


@dataclass(frozen=True)
class ModelSpec:
    make: str
    model: str
    powertrain: Powertrain
    wmi: str
    vds: str
    plant: str
    years: tuple[int, int]
    mass_kg: float
    cda_m2: float
    crr: float
    battery_kwh: float = 0.0
    cells_series: int = 0
    max_dc_kw: float = 0.0
    max_ac_kw: float = 0.0
    regen_kw: float = 0.0
    tank_l: float = 0.0
    engine_efficiency: float = 0.0
    gears: int = 0
    tire_placard_kpa: float = 240.0


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("Voltaro", "Aster", Powertrain.BEV, "5V9", "AE1B5", "A", (2019, 2025),
              1650, 0.58, 0.0090, battery_kwh=58, cells_series=96, max_dc_kw=125,
              max_ac_kw=11, regen_kw=70, tire_placard_kpa=250),
    ModelSpec("Voltaro", "Meridian", Powertrain.BEV, "5V9", "ME2S7", "A", (2021, 2025),
              2250, 0.74, 0.0095, battery_kwh=84, cells_series=192, max_dc_kw=230,
              max_ac_kw=11, regen_kw=120, tire_placard_kpa=260),
    ModelSpec("Nordvik", "E-Line", Powertrain.BEV, "WN9", "EL3V7", "M", (2020, 2025),
              2450, 1.10, 0.0100, battery_kwh=75, cells_series=108, max_dc_kw=100,
              max_ac_kw=11, regen_kw=80, tire_placard_kpa=380),
    ModelSpec("Nordvik", "Fjord", Powertrain.ICE, "WN9", "FJ1S4", "M", (2016, 2025),
              1450, 0.62, 0.0100, tank_l=50, engine_efficiency=0.28, gears=6,
              tire_placard_kpa=230),
    ModelSpec("Kestrel", "Ridge", Powertrain.ICE, "JK9", "RD2P6", "T", (2016, 2025),
              2100, 0.95, 0.0110, tank_l=80, engine_efficiency=0.27, gears=8,
              tire_placard_kpa=240),
    ModelSpec("Kestrel", "Courier", Powertrain.ICE, "JK9", "CR3V4", "T", (2017, 2025),
              1900, 1.05, 0.0105, tank_l=70, engine_efficiency=0.30, gears=6,
              tire_placard_kpa=350),
)  # fmt: skip

_YEAR_CODES = "ABCDEFGHJKLMNPRSTVWXY123456789"  # 2010 = A ... 2030 = Y, then 2031 = 1


def year_code(model_year: int) -> str:
    """VIN position 10 (the model year code, 30-year cycle)."""
    return _YEAR_CODES[(model_year - 2010) % 30]


# ECU id -> (latest software version, older versions still in the field)
_ECUS_COMMON = {
    "TCU": ("4.2.1", ("4.1.3", "3.9.0")),
    "GW": ("2.8.0", ("2.7.2",)),
    "BCM": ("7.1.4", ("7.0.9",)),
    "IVI": ("12.3.0", ("12.1.5", "11.8.2")),
    "ADAS": ("5.0.2", ("4.6.1",)),
    "ESC": ("3.3.1", ("3.3.0",)),
}
_ECUS_BEV = {
    "VCU": ("6.4.0", ("6.2.3",)),
    "BMS": ("9.1.2", ("9.0.7", "8.4.1")),
    "OBC": ("2.2.5", ("2.1.9",)),
    "INV": ("3.7.0", ("3.6.4",)),
}
_ECUS_ICE = {
    "ECM": ("11.5.3", ("11.4.0", "10.9.8")),
    "TCM": ("4.0.6", ("3.9.9",)),
}


@dataclass(frozen=True)
class VehicleProfile:
    """Everything the simulator knows about one vehicle. Register ``vin``, ``make``, ``model``,
    ``model_year``, ``powertrain``, ``region``, ``time_zone`` and ``ecus`` in the registry; the
    rest parameterises the physics."""

    vin: str
    make: str
    model: str
    model_year: int
    powertrain: Powertrain
    usage: Usage
    region: str
    time_zone: str
    home_lat: float
    home_lon: float
    ecus: tuple[Ecu, ...]
    seed: int
    """Per-vehicle random seed (trips, noise, delivery imperfections)."""
    mass_kg: float
    cda_m2: float
    crr: float
    odometer_m: int
    tire_placard_kpa: float
    pad_wear_pct: tuple[float, float, float, float]
    """Initial wear per wheel in ``vss.WHEELS`` order (VSS: 0 = new, 100 = worn)."""
    lv_rest_voltage: float
    driver_accel_mps2: float
    driver_brake_mps2: float
    driver_speed_factor: float
    commute_km: float
    battery_kwh: float = 0.0
    battery_soh_pct: float = 100.0
    """True capacity relative to new (ground truth for battery-health estimation)."""
    cells_series: int = 0
    max_dc_kw: float = 0.0
    max_ac_kw: float = 0.0
    regen_kw: float = 0.0
    home_charger_kw: float = 0.0
    """0 means no charger at home (public DC fast charging instead)."""
    work_charging: bool = False
    charge_limit_pct: float = 90.0
    plug_in_below_pct: float = 80.0
    initial_soc_pct: float = 0.0
    tank_l: float = 0.0
    engine_efficiency: float = 0.0
    gears: int = 0
    initial_fuel_pct: float = 0.0
    faults: tuple[FaultSpec, ...] = field(default=())

    @property
    def is_bev(self) -> bool:
        return self.powertrain is Powertrain.BEV

    @property
    def region_info(self) -> Region:
        return REGIONS[self.region]

    @property
    def signals(self) -> tuple[str, ...]:
        """The VSS paths this vehicle emits in every sample."""
        return vss.COMMON_SIGNALS + (vss.BEV_SIGNALS if self.is_bev else vss.ICE_SIGNALS)


def with_faults(profile: VehicleProfile, *faults: FaultSpec) -> VehicleProfile:
    """A copy of ``profile`` with ``faults`` added (checked to apply to its powertrain)."""
    allowed = kinds_for(profile.is_bev)
    for f in faults:
        if f.kind not in allowed:
            raise ValueError(f"{f.kind} does not apply to a {profile.powertrain} vehicle")
    return dataclasses.replace(profile, faults=profile.faults + tuple(faults))


def make_fleet(
    n: int,
    seed: int,
    *,
    bev_share: float = 0.5,
    commercial_share: float = 0.2,
    regions: Sequence[str] | None = None,
    faults: float | Mapping[int, Sequence[FaultSpec]] = 0.0,
    fault_horizon_s: float = DEFAULT_FAULT_HORIZON_S,
    fault_kinds: Sequence[FaultKind] | None = None,
) -> list[VehicleProfile]:
    """``n`` vehicles, the same for the same arguments.

    ``faults`` is either the share of vehicles that get one random fault (onset and failure
    inside ``[0, fault_horizon_s]`` simulated seconds, kind drawn from ``fault_kinds`` that
    apply to the powertrain), or a mapping from vehicle index to explicit fault specs.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= bev_share <= 1.0 or not 0.0 <= commercial_share <= 1.0:
        raise ValueError("shares must be within [0, 1]")
    region_codes = list(regions) if regions is not None else list(REGIONS)
    for code in region_codes:
        if code not in REGIONS:
            raise ValueError(f"unknown region {code!r}; known: {sorted(REGIONS)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF1EE7]))
    is_bev = np.zeros(n, dtype=bool)
    is_bev[rng.permutation(n)[: round(n * bev_share)]] = True
    commercial = np.zeros(n, dtype=bool)
    commercial[rng.permutation(n)[: round(n * commercial_share)]] = True
    serials = rng.choice(np.arange(1, 1_000_000), size=n, replace=False)
    profiles = [
        _make_profile(
            rng, int(serials[i]), Powertrain.BEV if is_bev[i] else Powertrain.ICE,
            Usage.COMMERCIAL if commercial[i] else Usage.PRIVATE,
            REGIONS[region_codes[int(rng.integers(len(region_codes)))]],
        )
        for i in range(n)
    ]  # fmt: skip
    if isinstance(faults, Mapping):
        for index, specs in faults.items():
            profiles[index] = with_faults(profiles[index], *specs)
    elif faults > 0:
        faulty = rng.permutation(n)[: round(n * faults)]
        for index in sorted(int(i) for i in faulty):
            profile = profiles[index]
            kinds = [
                k for k in kinds_for(profile.is_bev) if fault_kinds is None or k in fault_kinds
            ]
            if kinds:
                kind = kinds[int(rng.integers(len(kinds)))]
                profiles[index] = with_faults(profile, random_fault(kind, rng, fault_horizon_s))
    return profiles


def _make_profile(
    rng: np.random.Generator, serial: int, powertrain: Powertrain, usage: Usage, region: Region
) -> VehicleProfile:
    models = [m for m in MODELS if m.powertrain is powertrain]
    if usage is Usage.COMMERCIAL:  # vans are more likely in commercial use
        weights = np.array([3.0 if m.model in ("E-Line", "Courier") else 1.0 for m in models])
    else:
        weights = np.array([0.3 if m.model in ("E-Line", "Courier") else 1.0 for m in models])
    spec = models[int(rng.choice(len(models), p=weights / weights.sum()))]
    model_year = int(rng.integers(spec.years[0], spec.years[1] + 1))
    age = max(0.3, 2025.5 - model_year)
    km_per_year = (
        rng.uniform(30_000, 70_000)
        if usage is Usage.COMMERCIAL
        else rng.lognormal(math.log(14_000), 0.35)
    )
    odometer_m = int(age * km_per_year * 1000)
    # Home within ~15 km of the region's centre.
    r_km = min(25.0, abs(rng.normal(0, 8)))
    bearing = rng.uniform(0, 2 * math.pi)
    home_lat = region.lat + r_km * math.cos(bearing) / 111.32
    home_lon = region.lon + r_km * math.sin(bearing) / (111.32 * math.cos(math.radians(region.lat)))
    front = float(rng.uniform(3, 65))
    rear = float(rng.uniform(2, 45))
    ecus = _ecus(rng, spec, model_year)
    vin = make_vin(spec.wmi, spec.vds, year_code(model_year), spec.plant, serial)
    seed = int(rng.integers(2**62))
    mass_kg = spec.mass_kg + float(rng.uniform(70, 250))
    pads = (front, front + float(rng.uniform(-2, 2)), rear, rear + float(rng.uniform(-2, 2)))
    base = VehicleProfile(
        vin=vin, make=spec.make, model=spec.model, model_year=model_year, powertrain=powertrain,
        usage=usage, region=region.code, time_zone=region.time_zone,
        home_lat=round(home_lat, 6), home_lon=round(home_lon, 6), ecus=ecus, seed=seed,
        mass_kg=mass_kg, cda_m2=spec.cda_m2, crr=spec.crr, odometer_m=odometer_m,
        tire_placard_kpa=spec.tire_placard_kpa,
        pad_wear_pct=(_pad(pads[0]), _pad(pads[1]), _pad(pads[2]), _pad(pads[3])),
        lv_rest_voltage=float(rng.uniform(12.55, 12.75)),
        driver_accel_mps2=float(rng.uniform(1.1, 2.2)),
        driver_brake_mps2=float(rng.uniform(1.3, 2.6)),
        driver_speed_factor=float(rng.uniform(0.92, 1.08)),
        commute_km=float(np.clip(rng.lognormal(math.log(12), 0.6), 2, 60)),
    )  # fmt: skip
    if powertrain is Powertrain.BEV:
        home_kw = 0.0
        if usage is Usage.PRIVATE and rng.random() < 0.75:
            home_kw = 7.2 if region.ac_phases == 1 else 11.0
        return dataclasses.replace(
            base,
            battery_kwh=spec.battery_kwh,
            battery_soh_pct=float(np.clip(100 - age * rng.uniform(1.2, 2.6), 70, 100)),
            cells_series=spec.cells_series,
            max_dc_kw=spec.max_dc_kw,
            max_ac_kw=spec.max_ac_kw,
            regen_kw=spec.regen_kw,
            home_charger_kw=home_kw,
            work_charging=bool(rng.random() < 0.25),
            charge_limit_pct=float(rng.choice([80.0, 85.0, 90.0, 100.0], p=[0.4, 0.2, 0.3, 0.1])),
            plug_in_below_pct=float(rng.uniform(40, 85)),
            initial_soc_pct=float(rng.uniform(35, 90)),
        )
    return dataclasses.replace(
        base,
        tank_l=spec.tank_l,
        engine_efficiency=spec.engine_efficiency,
        gears=spec.gears,
        initial_fuel_pct=float(rng.uniform(25, 95)),
    )


def _pad(wear: float) -> float:
    return float(np.clip(wear, 0, 80))


def _ecus(rng: np.random.Generator, spec: ModelSpec, model_year: int) -> tuple[Ecu, ...]:
    table = {**_ECUS_COMMON, **(_ECUS_BEV if spec.powertrain is Powertrain.BEV else _ECUS_ICE)}
    make_code = spec.make[:3].upper()
    out = []
    for ecu_id, (latest, older) in table.items():
        # Most vehicles run the latest software; older ones lag more often.
        lag_p = 0.15 + 0.05 * max(0, 2025 - model_year)
        version = latest
        if rng.random() < min(0.6, lag_p):
            version = older[int(rng.integers(len(older)))]
        hw_rev = 1 + max(0, model_year - 2016) // 3
        out.append(Ecu(ecu_id, f"{make_code}-{spec.vds[:2]}-{ecu_id}-HW{hw_rev:02d}", version))
    return tuple(out)
