"""Telemetry for load tests, deterministic (seeded): from the simulator, or synthetic.

``source="simulator"`` (the default of the benchmark) takes the messages of
``simulator.runner.iter_messages`` for a ``simulator.fleet.make_fleet`` fleet with every delivery
imperfection off (no duplicates, late or malformed messages): the product's own model of a
vehicle, 25-33 signals per sample. ``source="synthetic"`` is the small model below, faster to
generate, about 20.7 signals per sample.

Synthetic model: each vehicle is a battery-electric (BEV) or combustion (ICE) car driving at
1 Hz: a smooth speed profile with noise, an odometer that integrates it, a GPS track that
follows the heading, and powertrain signals derived from speed (motor or engine speed, pack
current, gear...). Every sample carries 20 "fast" catalog signals; the first sample of every
message also carries 7 slow ones (tyre pressures, DTC list and count, state of health or fuel
level), so a message of 10 samples has about 20.7 signals per sample. All values are inside the
ranges of ``core.signals.CATALOG`` (``check_valid`` proves it with the product's own validator).
It is only meant to be realistic in what costs CPU in the backend: number of signals, value
types, JSON size.
"""

from __future__ import annotations

import itertools
import math
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from core.vin import make_vin

_V = "Vehicle."
_PT = "Vehicle.Powertrain."
_TB = "Vehicle.Powertrain.TractionBattery."
_AX = "Vehicle.Chassis.Axle."

_WMIS = ("WVW", "WBA", "VF1", "YV1", "5YJ", "SAL", "ZFA", "TMB")
_TYRES = tuple(
    f"{_AX}Row{row}.Wheel.{side}.Tire.Pressure" for row in (1, 2) for side in ("Left", "Right")
)
_DTCS = ("P0420", "P0300", "P0171", "C0035", "B1000", "U0100", "P0A80")

JsonDict = dict[str, Any]
Source = Literal["simulator", "synthetic"]
Item = tuple[str, str, bytes, int, int]  # (VIN, message_id, JSON bytes, samples, signals)


def fleet_vins(count: int, *, seed: int = 0) -> list[str]:
    """``count`` distinct, valid VINs (check digit included)."""
    rng = random.Random(seed)
    serials = rng.sample(range(1_000_000), count)
    return [make_vin(_WMIS[i % len(_WMIS)], "ZZZ1K", "R", "T", s) for i, s in enumerate(serials)]


@dataclass(frozen=True, slots=True)
class VehicleProfile:
    vin: str
    bev: bool
    seed: int


def profiles(vins: list[str], *, seed: int = 0) -> list[VehicleProfile]:
    """Two thirds BEVs, one third ICE cars."""
    return [VehicleProfile(vin, i % 3 != 2, seed * 1_000_003 + i) for i, vin in enumerate(vins)]


def drive(
    profile: VehicleProfile, steps: int, end_ms: int, period_ms: int = 1000
) -> list[JsonDict]:
    """``steps`` consecutive samples (``{"ts": ..., "signals": {...}}``) ending at ``end_ms``."""
    rng = np.random.default_rng(profile.seed)
    t = np.arange(steps, dtype=np.float64)
    dt_s = period_ms / 1000.0
    # Speed: urban/extra-urban oscillation plus smoothed noise, never negative.
    cruise = rng.uniform(35.0, 110.0)
    period = rng.uniform(120.0, 600.0)
    noise = np.convolve(rng.normal(0.0, 4.0, steps + 9), np.ones(10) / 10.0, mode="valid")
    speed = np.clip(cruise * (0.6 + 0.4 * np.sin(2 * math.pi * t / period + rng.uniform(0, 6)))
                    + noise, 0.0, 180.0)
    accel = np.clip(np.diff(speed, prepend=speed[0]) / 3.6 / dt_s, -9.0, 9.0)
    heading = np.mod(rng.uniform(0, 360) + np.cumsum(rng.normal(0.0, 1.5, steps)), 360.0)
    metres = speed / 3.6 * dt_s
    lat0, lon0 = rng.uniform(45.0, 55.0), rng.uniform(-2.0, 20.0)
    lat = lat0 + np.cumsum(metres * np.cos(np.radians(heading))) / 111_111.0
    lon = lon0 + np.cumsum(metres * np.sin(np.radians(heading))) / (
        111_111.0 * math.cos(math.radians(lat0))
    )
    odometer = rng.integers(5_000_000, 150_000_000) + np.cumsum(metres)
    altitude = 150.0 + np.cumsum(rng.normal(0.0, 0.3, steps))
    air = rng.uniform(-5.0, 30.0) + rng.normal(0.0, 0.1, steps)
    columns: dict[str, list[Any]] = {
        _V + "Speed": np.round(speed, 1).tolist(),
        _V + "TraveledDistance": odometer.astype(np.int64).tolist(),
        _V + "IsMoving": (speed > 0.5).tolist(),
        _V + "Acceleration.Longitudinal": np.round(accel, 2).tolist(),
        _V + "Acceleration.Lateral": np.round(rng.normal(0.0, 0.6, steps), 2).tolist(),
        _V + "CurrentLocation.Latitude": np.round(lat, 6).tolist(),
        _V + "CurrentLocation.Longitude": np.round(lon, 6).tolist(),
        _V + "CurrentLocation.Heading": np.round(heading, 1).tolist(),
        _V + "CurrentLocation.Altitude": np.round(altitude, 1).tolist(),
        _V + "Chassis.Accelerator.PedalPosition": np.clip(accel * 25.0, 0, 100).astype(
            np.int64).tolist(),
        _V + "Chassis.Brake.PedalPosition": np.clip(-accel * 15.0, 0, 100).astype(
            np.int64).tolist(),
        _V + "Chassis.SteeringWheel.Angle": np.clip(rng.normal(0.0, 20.0, steps), -540, 540).astype(
            np.int64).tolist(),
        _V + "LowVoltageSystemState": ["ON"] * steps,
        _V + "Exterior.AirTemperature": np.round(air, 1).tolist(),
        _V + "LowVoltageBattery.CurrentVoltage": np.round(
            14.1 + rng.normal(0.0, 0.05, steps), 2).tolist(),
    }
    if profile.bev:
        soc = np.clip(rng.uniform(30.0, 95.0) - np.cumsum(metres) / 1000.0 * 0.2, 1.0, 100.0)
        columns.update({
            _PT + "ElectricMotor.Speed": np.round(speed * 85.0, 0).tolist(),
            _PT + "ElectricMotor.Temperature": np.round(
                45.0 + speed / 8.0 + rng.normal(0.0, 0.3, steps), 1).tolist(),
            _TB + "StateOfCharge.Current": np.round(soc, 2).tolist(),
            _TB + "CurrentVoltage": np.round(340.0 + soc * 0.6 - accel * 2.0, 1).tolist(),
            _TB + "CurrentCurrent": np.round(
                -(speed * 0.9 + np.maximum(accel, 0) * 60.0), 1).tolist(),
        })
    else:
        gear = np.clip(speed // 25 + 1, 1, 6).astype(np.int64)
        columns.update({
            _PT + "CombustionEngine.Speed": np.round(800.0 + speed * 120.0 / gear, 0).tolist(),
            _PT + "CombustionEngine.IsRunning": [True] * steps,
            _PT + "CombustionEngine.EngineCoolant.Temperature": np.round(
                90.0 + rng.normal(0.0, 0.5, steps), 1).tolist(),
            _PT + "CombustionEngine.EngineOil.Temperature": np.round(
                97.0 + rng.normal(0.0, 0.5, steps), 1).tolist(),
            _PT + "Transmission.CurrentGear": gear.tolist(),
        })
    names = list(columns)
    start = end_ms - (steps - 1) * period_ms
    return [
        {"ts": start + i * period_ms, "signals": dict(zip(names, row, strict=True))}
        for i, row in enumerate(zip(*columns.values(), strict=True))
    ]


def slow_signals(profile: VehicleProfile, rng: random.Random) -> JsonDict:
    """Signals a vehicle sends once per message, not with every sample."""
    signals: JsonDict = {name: rng.randint(225, 255) for name in _TYRES}
    dtcs = [rng.choice(_DTCS)] if rng.random() < 0.02 else []
    signals[_V + "Diagnostics.DTCList"] = dtcs
    signals[_V + "Diagnostics.DTCCount"] = len(dtcs)
    if profile.bev:
        signals[_TB + "StateOfHealth"] = round(rng.uniform(85.0, 99.0), 1)
    else:
        signals[_PT + "FuelSystem.RelativeLevel"] = rng.randint(5, 100)
    return signals


def message_samples(
    profile: VehicleProfile, samples: list[JsonDict], rng: random.Random
) -> list[JsonDict]:
    """Add the slow signals to the first sample of a message's samples."""
    first = {"ts": samples[0]["ts"], "signals": {**samples[0]["signals"],
                                                 **slow_signals(profile, rng)}}
    return [first, *samples[1:]]


class FleetModel:
    """A deterministic fleet: ``vehicles`` cars, each sending messages of
    ``samples_per_message`` samples at 1 Hz, the newest sample a minute before ``end_ms``."""

    def __init__(
        self,
        vehicles: int,
        *,
        samples_per_message: int = 10,
        seed: int = 0,
        end_ms: int | None = None,
    ) -> None:
        self.vehicles = profiles(fleet_vins(vehicles, seed=seed), seed=seed)
        self.samples_per_message = samples_per_message
        self.seed = seed
        self.end_ms = end_ms if end_ms is not None else int(time.time() * 1000) - 60_000

    def iter_messages(self, messages: int, *, block: int = 50) -> Iterator[Item]:
        """``(vin, message_id, json_bytes, samples, signals)`` for ``messages`` messages in
        total, spread evenly
        over the fleet and interleaved across vehicles (vehicles are generated ``block`` at a
        time, so memory stays small)."""
        count = len(self.vehicles)
        per_vehicle = [messages // count + (1 if i < messages % count else 0) for i in range(count)]
        for first in range(0, count, block):
            group = self.vehicles[first:first + block]
            streams = []
            for offset, profile in enumerate(group):
                n = per_vehicle[first + offset]
                if n:
                    streams.append(self._vehicle_messages(profile, n))
            while streams:
                alive = []
                for stream in streams:
                    item = next(stream, None)
                    if item is not None:
                        yield item
                        alive.append(stream)
                streams = alive

    def _vehicle_messages(self, profile: VehicleProfile, count: int) -> Iterator[Item]:
        spm = self.samples_per_message
        rng = random.Random(profile.seed)
        samples = drive(profile, count * spm, self.end_ms)
        for seq in range(count):
            chunk = message_samples(profile, samples[seq * spm:(seq + 1) * spm], rng)
            message_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            payload = {
                "vin": profile.vin,
                "message_id": message_id,
                "seq": seq + 1,
                "samples": chunk,
                "sent_at": chunk[-1]["ts"] + rng.randint(50, 900),
            }
            signals = sum(len(sample["signals"]) for sample in chunk)
            yield profile.vin, message_id, orjson.dumps(payload), len(chunk), signals


@dataclass(frozen=True, slots=True)
class BodyTemplate:
    """A pre-encoded HTTP body with a hole for ``message_id`` and ``seq``::

        head + message_id + mid(seq) + samples_json + b"}"
    """

    vin: str
    head: bytes
    samples_json: bytes
    sent_at: int

    def body(self, message_id: str, seq: int) -> bytes:
        return b"".join((
            self.head, message_id.encode(), b'","seq":', str(seq).encode(),
            b',"sent_at":', str(self.sent_at).encode(), b',"samples":', self.samples_json, b"}",
        ))


def http_templates(
    vins: list[str],
    *,
    samples_per_request: int = 100,
    per_vehicle: int = 2,
    seed: int = 1,
    end_ms: int | None = None,
) -> list[BodyTemplate]:
    """``per_vehicle`` bodies of ``samples_per_request`` consecutive samples for each VIN."""
    end_ms = end_ms if end_ms is not None else int(time.time() * 1000) - 60_000
    out: list[BodyTemplate] = []
    for profile in profiles(vins, seed=seed):
        rng = random.Random(profile.seed)
        samples = drive(profile, per_vehicle * samples_per_request, end_ms)
        for k in range(per_vehicle):
            part = samples[k * samples_per_request:(k + 1) * samples_per_request]
            # A vehicle that buffers 100 s of data sends its slow signals every 10 samples.
            chunk = []
            for j in range(0, len(part), 10):
                chunk.extend(message_samples(profile, part[j:j + 10], rng))
            head = b'{"vin":"' + profile.vin.encode() + b'","message_id":"'
            out.append(BodyTemplate(profile.vin, head, orjson.dumps(chunk),
                                    chunk[-1]["ts"] + 500))
    return out




def simulator_fleet_vins(count: int, *, seed: int = 0) -> list[str]:
    from simulator.fleet import make_fleet

    return [profile.vin for profile in make_fleet(count, seed)]


def _simulated(
    vehicles: int, count: int, samples_per_message: int, seed: int, end_ms: int
) -> Iterator[Any]:
    """The first ``count`` valid messages (``TelemetryMessage``) of a simulated fleet, all in
    ``[start, end_ms)``, ordered by transmission time (so interleaved across vehicles)."""
    from simulator.delivery import DeliveryConfig, SimConfig
    from simulator.fleet import make_fleet
    from simulator.runner import iter_messages

    fleet = make_fleet(vehicles, seed)
    config = SimConfig(
        samples_per_message=samples_per_message,
        delivery=DeliveryConfig(duplicate_rate=0.0, late_rate=0.0, malformed_rate=0.0),
    )
    per_vehicle = -(-count // max(1, len(fleet))) + 1
    duration_s = per_vehicle * samples_per_message * config.sample_interval_s
    start_ms = end_ms - int(duration_s * 1000)
    yield from itertools.islice(
        iter_messages(fleet, start_ms, duration_s, seed=seed, config=config), count
    )


def iter_source(
    source: Source, count: int, *, vehicles: int, samples_per_message: int, seed: int,
    end_ms: int,
) -> Iterator[Item]:
    """``count`` valid messages as ``(vin, message_id, json_bytes, samples, signals)``."""
    if source == "synthetic":
        model = FleetModel(vehicles, samples_per_message=samples_per_message, seed=seed,
                           end_ms=end_ms)
        yield from model.iter_messages(count)
        return
    import msgspec

    encode = msgspec.json.Encoder().encode
    for message in _simulated(vehicles, count, samples_per_message, seed, end_ms):
        signals = sum(len(sample.signals) for sample in message.samples)
        yield message.vin, message.message_id, encode(message), len(message.samples), signals


def generate_chunks(
    source: Source, count: int, vehicles: int, samples_per_message: int, seed: int, end_ms: int,
    out: Any, chunk: int = 500,
) -> None:
    """Process entry point: put lists of ``Item`` on ``out``, then ``None`` (or an error text)."""
    from loadtest.loadgen import die_with_parent

    die_with_parent()
    try:
        batch: list[Item] = []
        for item in iter_source(source, count, vehicles=vehicles,
                                samples_per_message=samples_per_message, seed=seed,
                                end_ms=end_ms):
            batch.append(item)
            if len(batch) >= chunk:
                out.put(batch)
                batch = []
        if batch:
            out.put(batch)
        out.put(None)
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent
        out.put(f"{type(exc).__name__}: {exc}")


def simulator_templates(
    vins: list[str], *, fleet_seed: int, samples_per_request: int = 100, per_vehicle: int = 2,
    end_ms: int | None = None,
) -> list[BodyTemplate]:
    """``per_vehicle`` simulated bodies of ``samples_per_request`` samples for each vehicle of
    ``make_fleet(len(vins), fleet_seed)`` (whose VINs must be ``vins``)."""
    import msgspec

    end_ms = end_ms if end_ms is not None else int(time.time() * 1000) - 60_000
    encode = msgspec.json.Encoder().encode
    seen: dict[str, int] = {}
    out: list[BodyTemplate] = []
    wanted = set(vins)
    for message in _simulated(len(vins), len(vins) * per_vehicle, samples_per_request,
                              fleet_seed, end_ms):
        if message.vin not in wanted:
            raise ValueError(f"simulated VIN {message.vin} has no credential")
        if seen.get(message.vin, 0) >= per_vehicle:
            continue
        seen[message.vin] = seen.get(message.vin, 0) + 1
        head = b'{"vin":"' + message.vin.encode() + b'","message_id":"'
        sent_at = message.sent_at or message.samples[-1].ts
        out.append(BodyTemplate(message.vin, head, encode(message.samples), sent_at))
    return out


def check_valid(raw: bytes, now_ms: int | None = None) -> list[dict[str, object]]:
    """Errors the product's validator finds in ``raw`` (empty: valid)."""
    from core.signals import CATALOG
    from core.telemetry import decode
    from ingestion.validation import Validator

    message = decode(raw)
    errors = Validator(CATALOG).validate(message, now_ms or int(time.time() * 1000))
    return [e.as_dict() for e in errors]
