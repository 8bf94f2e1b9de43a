"""One virtual vehicle: a behaviour (a generator of activities: park, maybe charge or refuel,
drive a leg) and the physics that turn the current activity into samples.

Physics, per sample (``dt`` = sample interval):

* kinematics come from the leg profile (``simulator.drive``); odometer, GPS, heading and
  lateral acceleration are read off the route at the distance travelled;
* wheel power ``P = (m a + 1/2 rho CdA v^2 + m g Crr) v``; a BEV draws ``P / 0.9`` plus
  auxiliaries (HVAC grows with the distance of the outside temperature from 21 C) and
  recuperates up to its regen limit above 9 km/h, the rest is friction braking; an ICE burns
  ``P / (efficiency * 32 MJ/l)`` plus idle fuel and brakes by friction only;
* pack voltage from an NMC open-circuit-voltage curve and an internal resistance, current
  from ``P = V I`` (VSS sign: positive into the battery); cell temperature from ``I^2 R``
  heating, active cooling above 31 C and slow exchange with the outside air; cell voltage
  min/max from the average cell voltage and a spread;
* coolant temperature warms up towards the thermostat set point (faster under load) and
  cools to the outside air when parked; tire pressure follows the tire temperature (ideal
  gas, cold pressure set at 20 C); the 12 V battery sits at 13.9-14.2 V while running or
  charging, shows a surface charge that decays after parking, and dips when cranking;
* brake pad wear grows with the friction braking energy (front pads take 70 %);
* vertical acceleration is the road's (gravity removed): noise growing with speed.

Noise is drawn from a stream of its own, one fixed-width row per sample, so the data does not
depend on how samples are batched into messages.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from core.telemetry import Sample
from simulator import vss
from simulator.climate import AmbientModel
from simulator.drive import DS, Leg, RoadType, Route, build_route, offsets_to_latlon, profile_leg
from simulator.faults import (
    CELL_SPREAD_DTC_V,
    CELL_SPREAD_FAILURE_V,
    COOLANT_OVERTEMP_C,
    COOLANT_PERFORMANCE_C,
    COOLANT_RISE_C,
    COOLANT_SETPOINT_C,
    DTC_CELL,
    DTC_COOLANT_OVERTEMP,
    DTC_COOLANT_PERFORMANCE,
    DTC_LV_LOW,
    LV_LOW_V,
    LV_REST_DROP_V,
    PAD_WEAR_FAILURE_PCT,
    TIRE_LOW_FRACTION,
    TIRE_MIN_COLD_KPA,
    FaultKind,
    FaultSpec,
)
from simulator.fleet import Usage, VehicleProfile

RHO_AIR = 1.2
G = 9.81
FUEL_J_PER_L = 32.0e6
WHEEL_RADIUS_M = 0.32
IDLE_RPM = 750.0
DRIVE_EFFICIENCY = 0.90
REGEN_EFFICIENCY = 0.75
REGEN_MIN_SPEED = 2.5
PAD_KWH_PER_PCT = (8.0, 8.0, 5.5, 5.5)
BRAKE_SHARE = (0.35, 0.35, 0.15, 0.15)
_SOC_PTS = np.array([0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100], dtype=float)
_OCV_PTS = np.array([3.00, 3.35, 3.45, 3.55, 3.62, 3.67, 3.72, 3.79, 3.87, 3.95, 4.05, 4.18])
_GEARS = {
    6: (np.array([18, 32, 48, 65, 82]), np.array([3.5, 2.1, 1.4, 1.0, 0.8, 0.65]) * 3.7),
    8: (
        np.array([14, 24, 36, 50, 63, 78, 95]),
        np.array([4.7, 3.1, 2.1, 1.67, 1.29, 1.0, 0.84, 0.67]) * 3.2,
    ),
}
DC_TARGET_SOC = 80.0
BEV_RESERVE_SOC = 10.0
ICE_RESERVE_FUEL = 7.0

# Noise rows (one column per sample).
(_N_LONG, _N_LAT, _N_VERT, _N_GPS_E, _N_GPS_N, _N_LV, _N_LV2, _N_RPM, _N_TEMP, _N_CELL, _N_CELL2,
 _N_AMB) = range(12)  # fmt: skip
_NOISE_COLS = 12


@dataclass
class ChargePlan:
    dc: bool
    power_kw: float
    target_soc: float


@dataclass
class Park:
    until_s: float | None
    """None: until the DC session reaches its target (then ``until_s`` is set)."""
    place: str
    started_s: float
    charge: ChargePlan | None = None
    refuel: bool = False


@dataclass
class Drive:
    leg: Leg
    odo0: float
    p_batt: np.ndarray
    """W out of the traction battery (BEV)."""
    p_friction: np.ndarray
    """W dissipated by the friction brakes."""
    fuel_l: np.ndarray
    """Litres burnt per sample (ICE)."""
    gear: np.ndarray
    rpm: np.ndarray
    load: np.ndarray
    i: int = 0


Activity = Park | Drive


@dataclass
class _Outing:
    depart_s: float
    route: Route
    dest: str
    stay_s: float = 0.0
    return_at_s: float | None = None


class VehicleSim:
    """Produces the vehicle's samples in time order: ``advance(n)`` returns the next ``n``."""

    def __init__(
        self,
        profile: VehicleProfile,
        *,
        start_ms: int,
        run_seed: int = 0,
        sample_interval_s: float = 1.0,
        parked_sample_interval_s: float | None = None,
    ) -> None:
        if sample_interval_s <= 0:
            raise ValueError("sample_interval_s must be > 0")
        self.profile = profile
        self.region = profile.region_info
        self.start_ms = int(start_ms)
        self.dt_ms = max(1, round(sample_interval_s * 1000))
        self.dt = self.dt_ms / 1000.0
        self.parked_step = 1
        if parked_sample_interval_s is not None:
            self.parked_step = max(1, round(parked_sample_interval_s / self.dt))
        seed = [profile.seed, run_seed & 0xFFFF_FFFF_FFFF_FFFF]
        self.plan_rng = np.random.default_rng(np.random.SeedSequence([*seed, 1]))
        self.noise_rng = np.random.default_rng(np.random.SeedSequence([*seed, 2]))
        self.phase_ms = int(self.plan_rng.integers(self.dt_ms))
        self.k = 0
        self.tz: tzinfo
        try:
            self.tz = ZoneInfo(profile.time_zone)
        except ZoneInfoNotFoundError:  # no tz database: local solar time is close enough
            self.tz = timezone(timedelta(hours=round(self.region.lon / 15)))
        # State
        self.east = 0.0
        self.north = 0.0
        self.heading = float(self.plan_rng.uniform(0, 360))
        self.place = "home"
        self.odometer = float(profile.odometer_m)
        self.soc = profile.initial_soc_pct
        self.fuel = profile.initial_fuel_pct
        self.amb_offset = float(self.plan_rng.normal(0, 0.6))
        self.ambient = AmbientModel(self.region, self.amb_offset)
        amb0 = self.ambient.at(self.start_ms + self.phase_ms)
        self.batt_temp = amb0 + 2.0
        self.coolant = amb0
        self.tire_temp = amb0
        self.brake_energy_j = np.zeros(4)
        self.tire_cold = profile.tire_placard_kpa + self.plan_rng.uniform(-6, 6, 4)
        self.pad_initial = np.array(profile.pad_wear_pct, dtype=float)
        self.pad_wear_now = [int(x) for x in np.floor(self.pad_initial)]
        self.cell_spread = float(self.plan_rng.uniform(0.008, 0.022))
        self.signals = profile.signals
        self.dtcs: list[str] = []
        self.faults: dict[FaultKind, FaultSpec] = {f.kind: f for f in profile.faults}
        cap_kwh = profile.battery_kwh * profile.battery_soh_pct / 100.0
        self.capacity_j = cap_kwh * 3.6e6
        self.r_pack = 0.0009 * profile.cells_series
        self.batt_heat_capacity = max(1.0, profile.battery_kwh * 6.0 * 1100.0)
        self.commute_route: Route | None = None
        self._act: Activity | None = None
        self._behaviour = self._run()

    # ------------------------------------------------------------------ public API

    @property
    def vin(self) -> str:
        return self.profile.vin

    def next_ts(self) -> int:
        """Epoch ms of the next sample on the grid."""
        return self.start_ms + self.phase_ms + self.k * self.dt_ms

    @property
    def t(self) -> float:
        """Simulated seconds since the start, of the next sample."""
        return (self.phase_ms + self.k * self.dt_ms) / 1000.0

    def advance(self, n: int) -> list[Sample]:
        """The next ``n`` samples."""
        out: list[Sample] = []
        while len(out) < n:
            act = self._current()
            if isinstance(act, Drive):
                k = min(n - len(out), act.leg.n - act.i)
                out.extend(self._drive_chunk(act, k))
                if act.i >= act.leg.n:
                    self._act = None
            else:
                out.extend(self._park_chunk(act, n - len(out)))
        return out

    # ------------------------------------------------------------------ behaviour

    def _current(self) -> Activity:
        while True:
            if self._act is None:
                self._act = next(self._behaviour)
                if isinstance(self._act, Park):
                    self._act.started_s = self.t
            act = self._act
            if isinstance(act, Park) and act.until_s is not None and act.until_s <= self.t:
                self._act = None
                continue
            return act

    def _run(self) -> Iterator[Activity]:
        if self.profile.usage is Usage.COMMERCIAL:
            yield from self._commercial()
        else:
            yield from self._private()

    def _private(self) -> Iterator[Activity]:
        day = datetime.fromtimestamp(self.start_ms / 1000, self.tz).date()
        while True:
            for outing in self._plan_day(day):
                if outing.depart_s < self.t - 3600:
                    continue  # missed (before the start, or still away on an earlier trip)
                yield from self._park_until(outing.depart_s)
                yield from self._pre_departure()
                yield from self._drive(outing.route, outing.dest)
                back = outing.return_at_s if outing.return_at_s is not None else 0.0
                yield from self._park_until(max(back, self.t + outing.stay_s))
                yield from self._pre_departure()
                yield from self._drive(outing.route.reversed(), "home")
            day += timedelta(days=1)

    def _commercial(self) -> Iterator[Activity]:
        yield self._park(self.t + float(self.plan_rng.uniform(0, 180)))
        shift_start = self.t
        while True:
            yield from self._pre_departure(commercial=True)
            # Far from the base: head back towards it.
            goal = (0.0, 0.0) if math.hypot(self.east, self.north) > 8_000 else None
            length = float(self.plan_rng.uniform(2_000, 20_000))
            yield from self._drive(self._route(length, goal=goal), "other")
            if self.t - shift_start > 4 * 3600:  # a break, a charge if useful
                shift_start = self.t
                stay = float(self.plan_rng.uniform(1800, 3600))
                if self.profile.is_bev and self.soc < 60:
                    yield from self._energy_stop()
                yield self._park(self.t + stay)
            else:
                yield self._park(self.t + float(self.plan_rng.uniform(60, 900)))

    def _plan_day(self, day: date) -> list[_Outing]:
        rng = self.plan_rng

        def at(hour: float) -> float:
            local = datetime.combine(day, time(0), tzinfo=self.tz) + timedelta(hours=hour)
            return local.timestamp() - self.start_ms / 1000.0

        weekday = day.weekday() < 5
        outings: list[_Outing] = []
        long_trip = rng.random() < (0.03 if weekday else 0.08)
        if long_trip:
            length = float(rng.uniform(80_000, 250_000))
            outings.append(
                _Outing(at(rng.uniform(7.5, 10)), self._route(length), "other",
                        stay_s=float(rng.uniform(2, 5)) * 3600)
            )  # fmt: skip
        elif weekday and rng.random() < 0.85:
            if self.commute_route is None:
                self.commute_route = self._route(self.profile.commute_km * 1000)
            depart = at(float(np.clip(rng.normal(7.9, 0.5), 6.0, 10.0)))
            back = at(float(np.clip(rng.normal(17.2, 0.7), 15.0, 20.0)))
            outings.append(_Outing(depart, self.commute_route, "work", return_at_s=back))
        if weekday and rng.random() < 0.35:
            outings.append(
                _Outing(at(rng.uniform(18.5, 20.5)), self._route(rng.uniform(1_500, 6_000)),
                        "other", stay_s=float(rng.uniform(900, 3600)))
            )  # fmt: skip
        elif not weekday:
            for hour in (rng.uniform(10, 12), rng.uniform(14, 17))[: int(rng.integers(1, 3))]:
                outings.append(
                    _Outing(at(hour), self._route(rng.uniform(4_000, 35_000)), "other",
                            stay_s=float(rng.uniform(1800, 9000)))
                )  # fmt: skip
        outings.sort(key=lambda o: o.depart_s)
        return outings

    def _route(self, length: float, *, goal: tuple[float, float] | None = None) -> Route:
        rng = self.plan_rng
        length = float(length)
        if length < 6_000:
            sections = [(RoadType.URBAN, length)]
        elif length < 20_000:
            sections = [
                (RoadType.URBAN, 1_500),
                (RoadType.SUBURBAN, length - 3_000),
                (RoadType.URBAN, 1_500),
            ]
        else:
            sections = [
                (RoadType.URBAN, 1_500),
                (RoadType.SUBURBAN, 3_000),
                (RoadType.HIGHWAY, length - 7_500),
                (RoadType.SUBURBAN, 2_000),
                (RoadType.URBAN, 1_000),
            ]
        return build_route(
            rng,
            sections,
            start_east=self.east,
            start_north=self.north,
            heading_deg=self._initial_heading(goal),
            urban_kmh=self.region.urban_kmh,
            highway_kmh=self.region.highway_kmh,
            goal=goal,
        )

    def _initial_heading(self, goal: tuple[float, float] | None) -> float:
        if goal is None:
            return float(self.plan_rng.uniform(0, 360))
        bearing = math.degrees(math.atan2(goal[0] - self.east, goal[1] - self.north))
        return bearing + float(self.plan_rng.normal(0, 30))

    def _park(self, until_s: float | None, place: str | None = None) -> Park:
        place = self.place if place is None else place
        return Park(until_s, place, self.t, charge=self._charge_plan(place))

    def _park_until(self, until_s: float) -> Iterator[Activity]:
        if until_s > self.t:
            yield self._park(until_s)

    def _charge_plan(self, place: str) -> ChargePlan | None:
        p = self.profile
        if not p.is_bev:
            return None
        if place == "home" and p.home_charger_kw > 0 and self.soc < p.plug_in_below_pct:
            return ChargePlan(False, min(p.home_charger_kw, p.max_ac_kw), p.charge_limit_pct)
        if place == "work" and p.work_charging and self.soc < 75:
            return ChargePlan(False, min(7.2, p.max_ac_kw), min(90.0, p.charge_limit_pct))
        return None

    def _pre_departure(self, *, commercial: bool = False) -> Iterator[Activity]:
        p = self.profile
        if p.is_bev:
            threshold = 25.0 if (commercial or p.home_charger_kw == 0) else 12.0
            if self.soc < threshold:
                yield from self._energy_stop()
        elif self.fuel < 15.0:
            yield from self._energy_stop()

    def _energy_stop(self) -> Iterator[Activity]:
        if self.profile.is_bev:
            charger_kw = float(self.plan_rng.choice([50.0, 150.0, 250.0], p=[0.3, 0.5, 0.2]))
            plan = ChargePlan(True, min(charger_kw, self.profile.max_dc_kw), DC_TARGET_SOC)
            yield Park(None, "charger", self.t, charge=plan)
        else:
            yield Park(self.t + float(self.plan_rng.uniform(240, 480)), "fuel", self.t, refuel=True)

    def _drive(self, route: Route, dest: str) -> Iterator[Activity]:
        i, last = 0, route.n - 1
        stopped_at = -1
        while i < last:
            drive = self._make_drive(route, i, last)
            cut = self._energy_cut(drive, i) if stopped_at != i else None
            if cut is not None:
                if cut <= i + 200:  # under a kilometre left: charge or refuel here first
                    stopped_at = i
                    yield from self._energy_stop()
                    continue
                drive = self._make_drive(route, i, cut)
                yield drive
                yield from self._energy_stop()
                i = stopped_at = cut
                continue
            yield drive
            i = last
        self.place = dest

    def _energy_cut(self, drive: Drive, i0: int) -> int | None:
        """Route index before which the vehicle must stop to charge or refuel, or None."""
        if self.profile.is_bev:
            level = self.soc - np.cumsum(drive.p_batt) * self.dt / self.capacity_j * 100.0
            reserve = BEV_RESERVE_SOC
        else:
            level = self.fuel - np.cumsum(drive.fuel_l) / self.profile.tank_l * 100.0
            reserve = ICE_RESERVE_FUEL
        low = np.flatnonzero(level < reserve)
        if not len(low):
            return None
        return i0 + int(drive.leg.s[low[0]] // DS) - 40

    def _make_drive(self, route: Route, i0: int, i1: int) -> Drive:
        p = self.profile
        leg = profile_leg(
            route, i0, i1, self.plan_rng, dt=self.dt, accel=p.driver_accel_mps2,
            brake=p.driver_brake_mps2, speed_factor=p.driver_speed_factor,
        )  # fmt: skip
        v, a = leg.v, leg.a
        rolling = p.mass_kg * G * p.crr * (v > 0.05)
        p_wheel = (p.mass_kg * a + 0.5 * RHO_AIR * p.cda_m2 * v**2 + rolling) * v
        braking = np.maximum(-p_wheel, 0.0)
        load = np.clip(p_wheel / 90_000.0, 0.0, 1.0)
        n = leg.n
        if p.is_bev:
            regen = np.where(v > REGEN_MIN_SPEED, np.minimum(braking, p.regen_kw * 1000.0), 0.0)
            amb = self.ambient.at(self.next_ts())
            aux = 250.0 + min(3500.0, 70.0 * abs(amb - 21.0))
            p_batt = np.where(p_wheel > 0, p_wheel / DRIVE_EFFICIENCY, -regen * REGEN_EFFICIENCY)
            p_batt = p_batt + aux
            return Drive(leg, self.odometer, p_batt, braking - regen, np.zeros(n),
                         leg.in_gear.astype(np.int64), np.zeros(n), load)  # fmt: skip
        thresholds, ratios = _GEARS[p.gears]
        gear = np.searchsorted(thresholds, v * 3.6) + 1
        wheel_rpm = v / (2 * math.pi * WHEEL_RADIUS_M) * 60.0
        rpm = np.maximum(IDLE_RPM, wheel_rpm * ratios[gear - 1]) + 500.0 * load
        fuel = (0.7 / 3600.0 + (np.maximum(p_wheel, 0.0) + 300.0)
                / (p.engine_efficiency * FUEL_J_PER_L)) * self.dt  # fmt: skip
        gear = np.where(leg.in_gear, gear, 0)
        return Drive(leg, self.odometer, np.zeros(n), braking * 0.85, fuel, gear, rpm, load)

    # ------------------------------------------------------------------ physics

    def _times(self, k: int, step: int) -> tuple[list[int], np.ndarray]:
        base = self.start_ms + self.phase_ms
        first = self.k
        ts = [base + (first + j * step) * self.dt_ms for j in range(k)]
        t = (np.arange(k) * (step * self.dt_ms) + (self.phase_ms + first * self.dt_ms)) / 1000.0
        return ts, t

    def _progress(self, kind: FaultKind, t: np.ndarray, cap: float = 1.0) -> np.ndarray | None:
        fault = self.faults.get(kind)
        return None if fault is None else fault.progress(t, cap=cap)

    def _drive_chunk(self, act: Drive, k: int) -> list[Sample]:
        p = self.profile
        leg, dt = act.leg, self.dt
        i0 = act.i
        sl = slice(i0, i0 + k)
        ts, t = self._times(k, 1)
        noise = self.noise_rng.standard_normal((k, _NOISE_COLS)).T
        amb = self.ambient.many(ts)
        v = leg.v[sl]
        odo = act.odo0 + leg.s[sl]
        last = i0 + k - 1
        self.odometer = float(odo[-1])
        self.east, self.north = float(leg.east[last]), float(leg.north[last])
        self.heading = float(leg.heading[last])
        f = _Frame(k)
        self._motion(f, v, leg.a[sl], leg.a_lat[sl], leg.east[sl], leg.north[sl],
                     leg.heading[sl], odo, noise, gps_sigma=2.0)  # fmt: skip
        f.floats(vss.AIR_TEMPERATURE, np.array(amb) + 0.1 * noise[_N_AMB], 1)
        # Tires warm up with speed; friction braking energy wears the pads.
        tire_t = np.empty(k)
        alpha = 1.0 - math.exp(-dt / 900.0)
        temp = self.tire_temp
        for j, vj in enumerate(v.tolist()):
            temp += (amb[j] + 4.0 + 0.35 * vj - temp) * alpha
            tire_t[j] = temp
        self.tire_temp = temp
        e = np.cumsum(act.p_friction[sl]) * dt
        energy = self.brake_energy_j[:, None] + _BRAKE_SHARE[:, None] * e[None, :]
        self.brake_energy_j = energy[:, -1].copy()
        self._tires_and_brakes(f, t, tire_t, energy)
        weak = self._progress(FaultKind.WEAK_LV_BATTERY, t, cap=1.3)
        f.ints(vss.CURRENT_GEAR, act.gear[sl])
        if p.is_bev:
            lv = 13.95 + 0.03 * noise[_N_LV]
            f.lists[vss.LV_SYSTEM_STATE] = ["ON"] * k
            self._battery_drive(f, act, sl, amb, noise, t)
        else:
            lv = 14.2 - 0.2 * act.load[sl] + 0.04 * noise[_N_LV]
            rpm = act.rpm[sl] + 15.0 * noise[_N_RPM]
            state = ["ON"] * k
            if i0 == 0:  # cranking
                state[0] = "START"
                lv[0] = 10.4 - (2.6 * float(weak[0]) if weak is not None else 0.0)
                lv[0] += 0.1 * noise[_N_LV, 0]
                rpm[0] = 280.0
            f.lists[vss.LV_SYSTEM_STATE] = state
            f.floats(vss.ENGINE_SPEED, rpm, 0)
            self._engine_drive(f, act, sl, noise, t)
        if weak is not None:
            lv = lv - 0.25 * weak
        f.floats(vss.LV_BATTERY_VOLTAGE, lv, 2)
        act.i += k
        self.k += k
        return self._emit(ts, f)

    def _motion(
        self,
        f: _Frame,
        v: np.ndarray | float,
        a: np.ndarray | float,
        a_lat: np.ndarray | float,
        east: np.ndarray | float,
        north: np.ndarray | float,
        heading: np.ndarray | float,
        odo: np.ndarray | float,
        noise: np.ndarray,
        *,
        gps_sigma: float,
    ) -> None:
        p = self.profile
        lat, lon = offsets_to_latlon(
            p.home_lat,
            p.home_lon,
            east + gps_sigma * noise[_N_GPS_E],
            north + gps_sigma * noise[_N_GPS_N],
        )
        speed = np.rint(np.asarray(v) * 36.0) / 10.0
        f.floats(vss.SPEED, speed, 1)
        f.bools(vss.IS_MOVING, np.broadcast_to(speed >= 0.5, (f.k,)))
        f.ints(vss.TRAVELED_DISTANCE, np.floor(odo))
        f.floats(vss.LATITUDE, lat, 6)
        f.floats(vss.LONGITUDE, lon, 6)
        # Truncate to tenths so that rounding never yields 360.0.
        f.floats(vss.HEADING, np.floor(np.asarray(heading) % 360.0 * 10.0) / 10.0, 1)
        f.floats(vss.ACCEL_LONGITUDINAL, a + 0.06 * noise[_N_LONG], 2)
        f.floats(vss.ACCEL_LATERAL, a_lat + 0.05 * noise[_N_LAT], 2)
        f.floats(vss.ACCEL_VERTICAL, (0.03 + 0.012 * np.asarray(v)) * noise[_N_VERT], 2)

    def _tires_and_brakes(
        self, f: _Frame, t: np.ndarray, tire_t: np.ndarray, energy: np.ndarray | None
    ) -> None:
        """Tire pressure from the cold pressure and the tire temperature; pad wear from the
        braking energy per wheel (``energy`` (4, k), or None: unchanged since last time)."""
        p = self.profile
        placard = p.tire_placard_kpa
        cold = np.repeat(self.tire_cold[:, None], f.k, axis=1)
        leak = self.faults.get(FaultKind.TIRE_LEAK)
        if leak is not None:
            w = vss.WHEELS.index(leak.wheel or "")
            start = self.tire_cold[w]
            drop = leak.progress(t, cap=1e9) * (start - TIRE_LOW_FRACTION * placard)
            cold[w] = np.maximum(TIRE_MIN_COLD_KPA, start - drop)
        ratio = (tire_t + 273.15) / 293.15
        pressure = np.rint((cold + 101.325) * ratio[None, :] - 101.325)
        f.int_rows(vss.TIRE_PRESSURE, pressure)
        pads = self.faults.get(FaultKind.BRAKE_PAD_WEAR)
        if energy is None and pads is None:
            for key, value in zip(vss.BRAKE_PAD_WEAR, self.pad_wear_now, strict=True):
                f.lists[key] = [value] * f.k
            return
        if energy is None:
            energy = np.repeat(self.brake_energy_j[:, None], f.k, axis=1)
        wear = self.pad_initial[:, None] + energy / _PAD_J_PER_PCT[:, None]
        if pads is not None:
            w = vss.WHEELS.index(pads.wheel or "")
            excess = max(0.0, PAD_WEAR_FAILURE_PCT - float(self.pad_initial[w]))
            wear[w] += pads.progress(t, cap=1.5) * excess
        wear = np.clip(np.floor(wear), 0, 100)
        self.pad_wear_now = [int(x) for x in wear[:, -1]]
        f.int_rows(vss.BRAKE_PAD_WEAR, wear)

    def _pack(self, soc: np.ndarray, p_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Terminal voltage and current (+ into the battery) for power ``p_out`` (W, + out)."""
        v_ocv = np.interp(soc, _SOC_PTS, _OCV_PTS) * self.profile.cells_series
        disc = np.maximum(v_ocv**2 - 4.0 * p_out * self.r_pack, 0.0)
        v = (v_ocv + np.sqrt(disc)) / 2.0
        return v, -p_out / v

    def _cells(
        self,
        f: _Frame,
        volt: np.ndarray,
        current: np.ndarray,
        batt_t: np.ndarray,
        noise: np.ndarray,
        t: np.ndarray,
    ) -> None:
        """Cell voltage and temperature min/max; the imbalance DTC."""
        avg = volt / self.profile.cells_series
        imbalance = self._progress(FaultKind.CELL_IMBALANCE, t, cap=1.3)
        abs_i = np.abs(current)
        spread: np.ndarray | float = self.cell_spread
        load_extra = 0.00004 * abs_i
        if imbalance is not None:
            spread = spread + (CELL_SPREAD_FAILURE_V - self.cell_spread) * imbalance**1.5
            load_extra = load_extra + 0.0003 * imbalance * abs_i
        vmin = avg - 0.5 * spread - np.where(current < 0, load_extra, 0.0)
        vmin = vmin + 0.001 * noise[_N_CELL]
        vmax = avg + 0.5 * spread + np.where(current > 0, load_extra, 0.0)
        vmax = np.maximum(vmax + 0.001 * noise[_N_CELL2], vmin)
        f.floats(vss.CELL_VOLTAGE_MIN, vmin, 3)
        f.floats(vss.CELL_VOLTAGE_MAX, vmax, 3)
        if imbalance is not None:
            f.dtc(DTC_CELL, (vmax - vmin) >= CELL_SPREAD_DTC_V)
        t_spread = 1.0 + 0.004 * abs_i
        f.floats(vss.BATTERY_TEMP_MIN, batt_t - 0.4 * t_spread, 1)
        f.floats(vss.BATTERY_TEMP_MAX, batt_t + 0.6 * t_spread, 1)

    def _battery_thermal(self, amb: float, current: float, extra_heat: float = 0.0) -> None:
        heat = current * current * self.r_pack + extra_heat
        cooling = min(6000.0, max(0.0, (self.batt_temp - 31.0) * 1500.0))
        exchange = 12.0 * (self.batt_temp - amb)
        self.batt_temp += (heat - cooling - exchange) * self.dt / self.batt_heat_capacity

    def _battery_drive(
        self, f: _Frame, act: Drive, sl: slice, amb: list[float], noise: np.ndarray, t: np.ndarray
    ) -> None:
        p_out = act.p_batt[sl]
        delta = -p_out * (self.dt / self.capacity_j * 100.0)
        soc = np.clip(np.cumsum(np.concatenate(([self.soc], delta)))[1:], 0.0, 100.0)
        self.soc = float(soc[-1])
        volt, current = self._pack(soc, p_out)
        batt_t = np.empty(len(soc))
        for j, cur in enumerate(current.tolist()):
            self._battery_thermal(amb[j], cur)
            batt_t[j] = self.batt_temp
        k = f.k
        f.floats(vss.SOC, soc, 2)
        f.floats(vss.HV_VOLTAGE, volt, 1)
        f.floats(vss.HV_CURRENT, current, 1)
        f.lists[vss.IS_CHARGING] = [False] * k
        f.lists[vss.CHARGE_CABLE_CONNECTED] = [False] * k
        f.lists[vss.CHARGE_CURRENT_DC] = [0.0] * k
        f.lists[vss.CHARGE_CURRENT_AC] = [0.0] * k
        self._cells(f, volt, current, batt_t, noise, t)

    def _engine_drive(
        self, f: _Frame, act: Drive, sl: slice, noise: np.ndarray, t: np.ndarray
    ) -> None:
        pump = self._progress(FaultKind.COOLANT_PUMP, t, cap=1.0)
        load = act.load[sl].tolist()
        rise = pump.tolist() if pump is not None else [0.0] * f.k
        coolant = np.empty(f.k)
        temp = self.coolant
        for j, lj in enumerate(load):
            target = COOLANT_SETPOINT_C + COOLANT_RISE_C * rise[j] * (0.75 + 0.25 * lj)
            if temp < target - 2.0:  # warm-up: thermostat closed, faster under load
                temp = min(target, temp + self.dt * (0.12 + 0.35 * lj))
            else:  # thermostat regulation, or the pump-limited climb
                temp += (target - temp) * (1.0 - math.exp(-self.dt / 90.0))
            coolant[j] = temp
        self.coolant = temp
        ect = coolant + 0.3 * noise[_N_TEMP]
        f.floats(vss.COOLANT_TEMPERATURE, ect, 1)
        if pump is not None:
            f.dtc(DTC_COOLANT_PERFORMANCE, ect >= COOLANT_PERFORMANCE_C)
            f.dtc(DTC_COOLANT_OVERTEMP, ect >= COOLANT_OVERTEMP_C)
        burnt = -act.fuel_l[sl] * (100.0 / self.profile.tank_l)
        fuel = np.clip(np.cumsum(np.concatenate(([self.fuel], burnt)))[1:], 0.0, 100.0)
        self.fuel = float(fuel[-1])
        f.ints(vss.FUEL_LEVEL, np.rint(fuel))

    def _park_chunk(self, act: Park, kmax: int) -> list[Sample]:
        p = self.profile
        active = act.charge is not None or act.refuel
        step = 1 if active else self.parked_step
        span = step * self.dt
        k = kmax
        if act.until_s is not None:
            k = min(kmax, max(1, math.ceil((act.until_s - self.t) / span - 1e-9)))
        ts, t = self._times(k, step)
        amb = self.ambient.many(ts)
        # State first (a DC session can end part-way through the chunk), then exactly one noise
        # row per emitted sample.
        if p.is_bev:
            k, soc, p_in, batt_t = self._battery_park_state(act, t, amb, span)
            ts, t, amb = ts[:k], t[:k], amb[:k]
        else:
            coolant, fuel = self._engine_park_state(act, amb, span)
        noise = self.noise_rng.standard_normal((k, _NOISE_COLS)).T
        f = _Frame(k)
        self._motion(f, 0.0, 0.0, 0.0, self.east, self.north, self.heading, self.odometer,
                     noise, gps_sigma=1.5)  # fmt: skip
        f.floats(vss.ACCEL_LONGITUDINAL, 0.02 * noise[_N_LONG], 2)
        f.floats(vss.ACCEL_LATERAL, 0.02 * noise[_N_LAT], 2)
        f.floats(vss.AIR_TEMPERATURE, np.array(amb) + 0.1 * noise[_N_AMB], 1)
        f.lists[vss.CURRENT_GEAR] = [0] * k
        f.lists[vss.LV_SYSTEM_STATE] = ["OFF"] * k
        tire_alpha = 1.0 - math.exp(-span / 1800.0)
        tire_t = np.empty(k)
        temp = self.tire_temp
        for j in range(k):
            temp += (amb[j] - temp) * tire_alpha
            tire_t[j] = temp
        self.tire_temp = temp
        self._tires_and_brakes(f, t, tire_t, None)
        if p.is_bev:
            charging = p_in > 0
            self._battery_park_columns(f, act, soc, p_in, batt_t, noise, t)
        else:
            charging = np.zeros(k, dtype=bool)
            f.lists[vss.ENGINE_SPEED] = [0.0] * k
            ect = coolant + 0.3 * noise[_N_TEMP]
            f.floats(vss.COOLANT_TEMPERATURE, ect, 1)
            f.ints(vss.FUEL_LEVEL, np.rint(fuel))
        weak = self._progress(FaultKind.WEAK_LV_BATTERY, t, cap=1.3)
        rest = p.lv_rest_voltage - (LV_REST_DROP_V * weak if weak is not None else 0.0)
        surface = 0.45 * np.exp(-(t - act.started_s) / 1800.0)
        lv = np.where(charging, 13.9 + 0.03 * noise[_N_LV], rest + surface)
        lv = lv + 0.01 * noise[_N_LV2]
        f.floats(vss.LV_BATTERY_VOLTAGE, lv, 2)
        if weak is not None:
            f.dtc(DTC_LV_LOW, (lv < LV_LOW_V) & ~charging)
        self.k += k * step
        return self._emit(ts, f)

    def _battery_park_state(
        self, act: Park, t: np.ndarray, amb: list[float], span: float
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """Evolve SoC and pack temperature; returns (samples, soc, power in W, temperature).
        Stops early when a DC session's unplug time falls inside the chunk."""
        plan = act.charge
        soc: list[float] = []
        p_in: list[float] = []
        temps: list[float] = []
        t_list = t.tolist()
        decay = math.exp(-span * 12.0 / self.batt_heat_capacity)
        for j, tj in enumerate(t_list):
            if j > 0 and act.until_s is not None and tj >= act.until_s:
                break
            power = 0.0
            if plan is not None and self.soc < plan.target_soc:
                power = self._charge_power_w(plan)
                self.soc = min(plan.target_soc, self.soc + power * span / self.capacity_j * 100)
            done = plan is not None and plan.dc and self.soc >= plan.target_soc
            if done and act.until_s is None:  # unplug and leave a few minutes later
                act.until_s = tj + float(self.plan_rng.uniform(60, 300))
            if power > 0:
                v_ocv = _ocv(self.soc) * self.profile.cells_series
                heat = 4000.0 if plan is not None and plan.dc and self.batt_temp < 20 else 0.0
                self._battery_thermal(amb[j], power / v_ocv, heat)
            else:
                self.batt_temp = amb[j] + (self.batt_temp - amb[j]) * decay
            soc.append(self.soc)
            p_in.append(power)
            temps.append(self.batt_temp)
        return len(soc), np.array(soc), np.array(p_in), np.array(temps)

    def _battery_park_columns(
        self,
        f: _Frame,
        act: Park,
        soc: np.ndarray,
        p_in: np.ndarray,
        batt_t: np.ndarray,
        noise: np.ndarray,
        t: np.ndarray,
    ) -> None:
        n = f.k
        plan = act.charge
        volt, current = self._pack(soc, -p_in)
        f.floats(vss.SOC, soc, 2)
        f.floats(vss.HV_VOLTAGE, volt, 1)
        f.floats(vss.HV_CURRENT, current, 1)
        f.bools(vss.IS_CHARGING, p_in > 0)
        f.lists[vss.CHARGE_CABLE_CONNECTED] = [plan is not None] * n
        if plan is not None and plan.dc:
            f.floats(vss.CHARGE_CURRENT_DC, current, 1)
            f.lists[vss.CHARGE_CURRENT_AC] = [0.0] * n
        elif plan is not None:
            f.lists[vss.CHARGE_CURRENT_DC] = [0.0] * n
            phases, v_phase = self.region.ac_phases, self.region.ac_phase_voltage
            f.floats(vss.CHARGE_CURRENT_AC, p_in / 0.92 / (phases * v_phase), 1)
        else:
            f.lists[vss.CHARGE_CURRENT_DC] = [0.0] * n
            f.lists[vss.CHARGE_CURRENT_AC] = [0.0] * n
        self._cells(f, volt, current, batt_t, noise, t)

    def _charge_power_w(self, plan: ChargePlan) -> float:
        """Power into the battery (W) at the current SoC: DC tapers above 50 %, AC above 95 %."""
        soc = self.soc
        if plan.dc:
            if soc <= 50:
                taper = 1.0
            elif soc <= 80:
                taper = 1.0 - 0.65 * (soc - 50) / 30
            else:
                taper = 0.35 - 0.25 * (soc - 80) / 20
            return plan.power_kw * 1000.0 * taper * 0.95
        taper = 1.0 if soc <= 95 else 1.0 - 0.7 * (soc - 95) / 5
        return plan.power_kw * 1000.0 * taper * 0.92

    def _engine_park_state(
        self, act: Park, amb: list[float], span: float
    ) -> tuple[np.ndarray, np.ndarray]:
        decay = math.exp(-span / 2400.0)
        coolant = np.empty(len(amb))
        fuel = np.empty(len(amb))
        for j, a in enumerate(amb):
            self.coolant = a + (self.coolant - a) * decay
            coolant[j] = self.coolant
            if act.refuel:
                self.fuel = min(100.0, self.fuel + span * 100.0 / 150.0)
            fuel[j] = self.fuel
        return coolant, fuel

    def _emit(self, ts: list[int], f: _Frame) -> list[Sample]:
        cols = f.finish()
        k = f.k
        activations = sorted(
            (at, code) for code, at in f.dtc_first.items() if code not in self.dtcs
        )
        if activations:
            before = list(self.dtcs)
            lists = [before + [code for at, code in activations if at <= j] for j in range(k)]
            self.dtcs = lists[-1]
            cols[vss.DTC_LIST] = lists
        else:
            cols[vss.DTC_LIST] = [list(self.dtcs) for _ in range(k)]
        keys = self.signals
        columns = [cols[key] for key in keys]
        return [
            Sample(ts=ts_j, signals=dict(zip(keys, row, strict=True)))
            for ts_j, row in zip(ts, zip(*columns, strict=True), strict=True)
        ]


def _ocv(soc: float) -> float:
    """Open-circuit cell voltage (NMC) at ``soc`` percent."""
    i = min(len(_SOC_LIST) - 2, max(0, bisect.bisect_right(_SOC_LIST, soc) - 1))
    x0, x1 = _SOC_LIST[i], _SOC_LIST[i + 1]
    y0, y1 = _OCV_LIST[i], _OCV_LIST[i + 1]
    return y0 + (y1 - y0) * (min(max(soc, x0), x1) - x0) / (x1 - x0)


class _Frame:
    """The columns of one chunk of ``k`` samples. Floats are collected and rounded in one
    numpy operation, integers converted in another: far cheaper than a call per signal."""

    __slots__ = ("k", "lists", "_f_keys", "_f_vals", "_f_dec", "_i_keys", "_i_vals", "dtc_first")

    def __init__(self, k: int) -> None:
        self.k = k
        self.lists: dict[str, list] = {}
        self._f_keys: list[str] = []
        self._f_vals: list[np.ndarray | float] = []
        self._f_dec: list[int] = []
        self._i_keys: list[str] = []
        self._i_vals: list[np.ndarray | float] = []
        self.dtc_first: dict[str, int] = {}

    def floats(self, key: str, value: np.ndarray | float, decimals: int) -> None:
        self._f_keys.append(key)
        self._f_vals.append(value)
        self._f_dec.append(decimals)

    def ints(self, key: str, value: np.ndarray | float) -> None:
        """``value`` must already hold whole numbers."""
        self._i_keys.append(key)
        self._i_vals.append(value)

    def int_rows(self, keys: tuple[str, ...], rows: np.ndarray) -> None:
        for key, row in zip(keys, rows, strict=True):
            self.ints(key, row)

    def bools(self, key: str, value: np.ndarray) -> None:
        self.lists[key] = value.tolist()

    def dtc(self, code: str, mask: np.ndarray) -> None:
        """Activate ``code`` at the first sample where ``mask`` holds."""
        hits = np.flatnonzero(mask)
        if len(hits) and code not in self.dtc_first:
            self.dtc_first[code] = int(hits[0])

    def finish(self) -> dict[str, list]:
        if self._f_keys:
            m = np.empty((len(self._f_keys), self.k))
            for i, value in enumerate(self._f_vals):
                m[i] = value
            scale = _SCALES[self._f_dec][:, None]
            self.lists.update(zip(self._f_keys, (np.rint(m * scale) / scale).tolist(), strict=True))
        if self._i_keys:
            m = np.empty((len(self._i_keys), self.k))
            for i, value in enumerate(self._i_vals):
                m[i] = value
            self.lists.update(zip(self._i_keys, m.astype(np.int64).tolist(), strict=True))
        return self.lists


_SCALES = 10.0 ** np.arange(10)
_SOC_LIST = _SOC_PTS.tolist()
_OCV_LIST = _OCV_PTS.tolist()
_BRAKE_SHARE = np.array(BRAKE_SHARE)
_PAD_J_PER_PCT = np.array(PAD_KWH_PER_PCT) * 3.6e6
