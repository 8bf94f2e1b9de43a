"""The signal catalog: the telemetry contract between vehicles and the backend.

Every signal the product uses is listed in :data:`CATALOG` under its exact COVESA Vehicle Signal
Specification (VSS) 6.0 path, with the VSS datatype and unit and the range the product accepts.
Where VSS gives ``min``/``max`` the range is VSS's (or tighter); where it does not, the range is
a physically sensible one chosen here, and integer ranges always fit their ``uintN``/``intN``
type. Enumerated strings keep VSS's ``allowed`` values. Units are spelled exactly as in VSS 6.0,
which writes ``percent`` and ``degrees`` (not ``%``/``deg``) and ``Celsius`` (capitalised).

``tests/core/test_signals.py`` checks every entry against the real VSS 6.0 JSON export in
``../shared/data/vss/`` (path exists and is a leaf, same datatype, same unit, allowed values a
subset, range inside VSS's).

"Bring your own VSS catalog": :func:`load_vss_catalog` flattens any VSS JSON export (the output
of ``vspec export json``, expanded or not) into :class:`SignalSpec` entries, and
:func:`merged_catalog` adds them to the product catalog so a deployment can accept every signal of
its own VSS tree; product entries win because they carry tighter ranges.

Signals named in the product brief that VSS 6.0 does not have, and what is used instead:

- battery *cell* temperature min/max: VSS 6.0 has no ``TractionBattery.CellTemperature`` branch;
  ``TractionBattery.Temperature.Min``/``Max`` are defined as the coldest/hottest cell, so those
  are used (the per-cell array ``Temperature.CellTemperature`` is ``float[]``, see below).
- charging "status" and AC vs DC: there is no charging-status enumeration or charging-mode
  signal; charging state is ``Charging.IsCharging`` plus the cable flag, and AC vs DC shows in
  which of ``Charging.ChargeCurrent.DC`` / ``Charging.ChargeCurrent.Phase1`` carries current.
- ignition / power state: ``Vehicle.LowVoltageSystemState`` (LOCK/OFF/ACC/ON/START).
- vehicle speed limit: VSS 6.0 has none (``ADAS.CruiseControl.SpeedSet`` is the cruise set
  speed, not a legal limit), so the catalog has no speed-limit signal.

Array datatypes other than ``string[]`` (``float[]``, ``uint8[]``, ...) and struct types cannot be
carried by telemetry message v1 (``core.telemetry.SignalValue``), so :func:`load_vss_catalog`
skips such leaves (three in VSS 6.0).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import product
from types import MappingProxyType
from typing import Any, Literal

import orjson
import pyarrow as pa

__all__ = [
    "CATALOG",
    "NUMERIC_SIGNALS",
    "SUPPORTED_DATATYPES",
    "Kind",
    "SignalSpec",
    "arrow_type",
    "integer_bounds",
    "load_vss_catalog",
    "merged_catalog",
]

Kind = Literal["float", "int", "bool", "string", "string_list"]

_INTEGER_BOUNDS: dict[str, tuple[int, int]] = {
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}

_KIND_BY_DATATYPE: dict[str, Kind] = {
    "float": "float",
    "double": "float",
    **{datatype: "int" for datatype in _INTEGER_BOUNDS},
    "boolean": "bool",
    "string": "string",
    "string[]": "string_list",
}

SUPPORTED_DATATYPES: frozenset[str] = frozenset(_KIND_BY_DATATYPE)
"""VSS datatypes telemetry message v1 can carry (scalars and string lists)."""

_LEAF_TYPES = frozenset({"sensor", "actuator", "attribute"})


def integer_bounds(datatype: str) -> tuple[int, int] | None:
    """Inclusive bounds implied by a VSS integer datatype (``uint8`` ... ``int64``), else None."""
    return _INTEGER_BOUNDS.get(datatype)


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One VSS leaf signal as the product validates and stores it."""

    path: str
    datatype: str
    """VSS datatype: float, double, (u)int8..64, boolean, string or string[]."""
    unit: str | None
    """VSS unit exactly as VSS 6.0 spells it (km/h, m, percent, V, A, Celsius, kPa, degrees...)."""
    min: float | None
    max: float | None
    allowed: tuple[str, ...] | None
    """Enumerated values of a string or string[] signal; None means any string."""
    description: str

    def __post_init__(self) -> None:
        if self.datatype not in _KIND_BY_DATATYPE:
            raise ValueError(f"{self.path}: unsupported VSS datatype {self.datatype!r}")
        kind = _KIND_BY_DATATYPE[self.datatype]
        if kind not in ("float", "int") and (self.min is not None or self.max is not None):
            raise ValueError(f"{self.path}: min/max given for non-numeric {self.datatype}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.path}: min {self.min} > max {self.max}")
        bounds = _INTEGER_BOUNDS.get(self.datatype)
        if bounds is not None:
            for limit in (self.min, self.max):
                if limit is not None and not bounds[0] <= limit <= bounds[1]:
                    raise ValueError(f"{self.path}: {limit} outside {self.datatype} {bounds}")
        if self.allowed is not None and kind not in ("string", "string_list"):
            raise ValueError(f"{self.path}: allowed values given for {self.datatype}")

    @property
    def kind(self) -> Kind:
        """float (float/double), int ((u)intN), bool, string or string_list (string[])."""
        return _KIND_BY_DATATYPE[self.datatype]


def arrow_type(spec: SignalSpec) -> pa.DataType:
    """The Arrow type of a signal's column (Parquet archive, analytics batches)."""
    kind = spec.kind
    if kind == "float":
        return pa.float64()
    if kind == "int":
        return pa.int64()
    if kind == "bool":
        return pa.bool_()
    if kind == "string":
        return pa.string()
    return pa.list_(pa.string())


def _s(
    path: str,
    datatype: str,
    unit: str | None,
    lo: float | None,
    hi: float | None,
    description: str,
    allowed: tuple[str, ...] | None = None,
) -> SignalSpec:
    return SignalSpec(path, datatype, unit, lo, hi, allowed, description)


_V = "Vehicle."
_PT = "Vehicle.Powertrain."
_TB = "Vehicle.Powertrain.TractionBattery."
_AX = "Vehicle.Chassis.Axle."
_U32 = 2**32 - 1

# fmt: off
_ENTRIES: tuple[SignalSpec, ...] = (
    # --- motion and odometry -------------------------------------------------------------------
    _s(_V + "Speed", "float", "km/h", -50.0, 350.0, "Vehicle speed (negative when reversing)."),
    _s(_V + "TraveledDistance", "uint32", "m", 0, _U32, "Odometer reading."),
    _s(_V + "TraveledDistanceSinceStart", "uint32", "m", 0, 10_000_000,
       "Distance since the vehicle was started (trip odometer)."),
    _s(_V + "IsMoving", "boolean", None, None, None, "True while the vehicle is moving."),
    _s(_V + "Acceleration.Longitudinal", "float", "m/s^2", -100.0, 100.0,
       "Acceleration along X (forward positive)."),
    _s(_V + "Acceleration.Lateral", "float", "m/s^2", -100.0, 100.0, "Acceleration along Y."),
    _s(_V + "Acceleration.Vertical", "float", "m/s^2", -100.0, 100.0, "Acceleration along Z."),
    # --- location ------------------------------------------------------------------------------
    _s(_V + "CurrentLocation.Latitude", "double", "degrees", -90.0, 90.0, "WGS 84 latitude."),
    _s(_V + "CurrentLocation.Longitude", "double", "degrees", -180.0, 180.0,
       "WGS 84 longitude."),
    _s(_V + "CurrentLocation.Heading", "double", "degrees", 0.0, 360.0,
       "Heading relative to true north."),
    _s(_V + "CurrentLocation.Altitude", "double", "m", -500.0, 9_000.0,
       "Altitude relative to WGS 84 sea level."),
    _s(_V + "CurrentLocation.HorizontalAccuracy", "double", "m", 0.0, 100_000.0,
       "Accuracy of latitude and longitude."),
    # --- driver inputs and state ---------------------------------------------------------------
    _s(_V + "Chassis.Accelerator.PedalPosition", "uint8", "percent", 0, 100,
       "Accelerator pedal position, 0 = released."),
    _s(_V + "Chassis.Brake.PedalPosition", "uint8", "percent", 0, 100,
       "Brake pedal position, 0 = released."),
    _s(_V + "Chassis.SteeringWheel.Angle", "int16", "degrees", -1_080, 1_080,
       "Steering wheel angle, positive = left."),
    _s(_PT + "Transmission.CurrentGear", "int8", None, -10, 20,
       "Engaged gear: 0 = neutral, >0 forward, <0 reverse."),
    _s(_PT + "Transmission.SelectedGear", "int8", None, -10, 127,
       "Selected gear: 0 = neutral, >0 forward, <0 reverse, 126 = park, 127 = drive."),
    _s(_V + "LowVoltageSystemState", "string", None, None, None,
       "Ignition / supply state of the control units (usually 12 V).",
       ("UNDEFINED", "LOCK", "OFF", "ACC", "ON", "START")),
    # --- combustion engine, motor, fuel, environment -------------------------------------------
    _s(_PT + "CombustionEngine.Speed", "float", "rpm", 0.0, 15_000.0, "Engine speed."),
    _s(_PT + "CombustionEngine.IsRunning", "boolean", None, None, None,
       "True while the engine is running."),
    _s(_PT + "CombustionEngine.EngineCoolant.Temperature", "float", "Celsius", -50.0, 200.0,
       "Engine coolant temperature."),
    _s(_PT + "CombustionEngine.EngineOil.Temperature", "float", "Celsius", -50.0, 200.0,
       "Engine oil temperature."),
    _s(_PT + "ElectricMotor.Speed", "float", "rpm", -25_000.0, 25_000.0,
       "Traction motor speed."),
    _s(_PT + "ElectricMotor.Temperature", "float", "Celsius", -50.0, 250.0,
       "Traction motor temperature."),
    _s(_PT + "FuelSystem.RelativeLevel", "uint8", "percent", 0, 100,
       "Fuel level as a percentage of tank capacity."),
    _s(_PT + "Range", "uint32", "m", 0, 3_000_000, "Remaining range, all energy sources."),
    _s(_V + "Exterior.AirTemperature", "float", "Celsius", -60.0, 70.0,
       "Ambient air temperature outside the vehicle."),
    # --- traction battery ----------------------------------------------------------------------
    _s(_TB + "StateOfCharge.Current", "float", "percent", 0.0, 100.0,
       "Physical state of charge."),
    _s(_TB + "StateOfCharge.Displayed", "float", "percent", 0.0, 100.0,
       "State of charge shown to the driver."),
    _s(_TB + "StateOfCharge.CurrentEnergy", "float", "kWh", 0.0, 1_000.0,
       "Physical energy stored in the battery."),
    _s(_TB + "CurrentVoltage", "float", "V", 0.0, 1_500.0, "Pack voltage."),
    _s(_TB + "CurrentCurrent", "float", "A", -2_000.0, 2_000.0,
       "Pack current, positive = into the battery (charging)."),
    _s(_TB + "CellVoltage.Min", "float", "V", 0.0, 5.0, "Lowest cell voltage."),
    _s(_TB + "CellVoltage.Max", "float", "V", 0.0, 5.0, "Highest cell voltage."),
    _s(_TB + "Temperature.Min", "float", "Celsius", -60.0, 150.0,
       "Coldest cell temperature (VSS 6.0 has no CellTemperature.Min)."),
    _s(_TB + "Temperature.Max", "float", "Celsius", -60.0, 150.0,
       "Hottest cell temperature (VSS 6.0 has no CellTemperature.Max)."),
    _s(_TB + "Temperature.Average", "float", "Celsius", -60.0, 150.0,
       "Average battery temperature."),
    _s(_TB + "GrossCapacity", "uint16", "kWh", 0, 1_000, "Gross capacity when new."),
    _s(_TB + "NetCapacity", "uint16", "kWh", 0, 1_000, "Net capacity, considering aging."),
    _s(_TB + "StateOfHealth", "float", "percent", 0.0, 100.0,
       "Battery state of health reported by the vehicle."),
    _s(_TB + "AccumulatedChargedEnergy", "float", "kWh", 0.0, 10_000_000.0,
       "Lifetime energy charged into the battery."),
    _s(_TB + "AccumulatedConsumedEnergy", "float", "kWh", 0.0, 10_000_000.0,
       "Lifetime energy taken from the battery."),
    _s(_TB + "Range", "uint32", "m", 0, 3_000_000, "Remaining electric range."),
    # --- charging ------------------------------------------------------------------------------
    _s(_TB + "Charging.IsCharging", "boolean", None, None, None,
       "True while energy flows from the charger into the vehicle."),
    _s(_TB + "Charging.ChargingPort.AnyPosition.IsChargingCableConnected", "boolean", None,
       None, None, "True if a charging cable is plugged into any charging port."),
    _s(_TB + "Charging.ChargeCurrent.DC", "float", "A", -1_000.0, 1_000.0,
       "DC charging current (non-zero means DC charging; negative = V2G discharge)."),
    _s(_TB + "Charging.ChargeCurrent.Phase1", "float", "A", -100.0, 100.0,
       "AC charging current, phase 1 (non-zero means AC charging)."),
    _s(_TB + "Charging.ChargeVoltage.DC", "float", "V", 0.0, 1_500.0, "DC charging voltage."),
    _s(_TB + "Charging.ChargeVoltage.Phase1", "float", "V", 0.0, 500.0,
       "AC charging voltage, phase 1."),
    _s(_TB + "Charging.ChargeLimit", "uint8", "percent", 0, 100,
       "Target state of charge for charging."),
    _s(_TB + "Charging.TimeToComplete", "uint32", "s", 0, 604_800,
       "Time until charging is complete."),
    # --- low-voltage (12 V) system -------------------------------------------------------------
    _s(_V + "LowVoltageBattery.CurrentVoltage", "float", "V", 0.0, 40.0,
       "12 V (low-voltage) battery voltage."),
    # --- tyres and brakes ----------------------------------------------------------------------
    _s(_AX + "Row1.Wheel.Left.Tire.Pressure", "uint16", "kPa", 0, 1_000, "Front left tyre."),
    _s(_AX + "Row1.Wheel.Right.Tire.Pressure", "uint16", "kPa", 0, 1_000, "Front right tyre."),
    _s(_AX + "Row2.Wheel.Left.Tire.Pressure", "uint16", "kPa", 0, 1_000, "Rear left tyre."),
    _s(_AX + "Row2.Wheel.Right.Tire.Pressure", "uint16", "kPa", 0, 1_000, "Rear right tyre."),
    _s(_AX + "Row1.Wheel.Left.Tire.IsPressureLow", "boolean", None, None, None,
       "TPMS low-pressure warning."),
    _s(_AX + "Row1.Wheel.Right.Tire.IsPressureLow", "boolean", None, None, None,
       "TPMS low-pressure warning."),
    _s(_AX + "Row2.Wheel.Left.Tire.IsPressureLow", "boolean", None, None, None,
       "TPMS low-pressure warning."),
    _s(_AX + "Row2.Wheel.Right.Tire.IsPressureLow", "boolean", None, None, None,
       "TPMS low-pressure warning."),
    _s(_AX + "Row1.Wheel.Left.Brake.PadWear", "uint8", "percent", 0, 100,
       "Front left brake pad wear, 0 = new, 100 = worn."),
    _s(_AX + "Row1.Wheel.Right.Brake.PadWear", "uint8", "percent", 0, 100,
       "Front right brake pad wear, 0 = new, 100 = worn."),
    _s(_AX + "Row2.Wheel.Left.Brake.PadWear", "uint8", "percent", 0, 100,
       "Rear left brake pad wear, 0 = new, 100 = worn."),
    _s(_AX + "Row2.Wheel.Right.Brake.PadWear", "uint8", "percent", 0, 100,
       "Rear right brake pad wear, 0 = new, 100 = worn."),
    # --- diagnostics ---------------------------------------------------------------------------
    _s(_V + "Diagnostics.DTCList", "string[]", None, None, None,
       "Active DTCs in OBD-II format ([P|C|B|U]XXXX), SAE J2012."),
    _s(_V + "Diagnostics.DTCCount", "uint8", None, 0, 255, "Number of active DTCs."),
)
# fmt: on


def _build(entries: tuple[SignalSpec, ...]) -> Mapping[str, SignalSpec]:
    catalog: dict[str, SignalSpec] = {}
    for spec in entries:
        if spec.path in catalog:
            raise ValueError(f"duplicate catalog entry {spec.path}")
        catalog[spec.path] = spec
    return MappingProxyType(catalog)


CATALOG: Mapping[str, SignalSpec] = _build(_ENTRIES)
"""The product's signals, keyed by VSS path (read-only)."""

NUMERIC_SIGNALS: tuple[str, ...] = tuple(
    path for path, spec in CATALOG.items() if spec.kind in ("float", "int")
)
"""Paths of the catalog's float and int signals, in catalog order."""


# --------------------------------------------------------------------------------------------
# Bring your own VSS catalog
# --------------------------------------------------------------------------------------------

_RANGE = re.compile(r"^(?P<name>[^\[\]]*)\[(?P<lo>\d+),(?P<hi>\d+)\]$")


def _expand_name(name: str) -> list[str]:
    """``"Row[1,3]"`` -> ``["Row1", "Row2", "Row3"]``; any other name -> ``[name]``."""
    match = _RANGE.match(name.replace(" ", ""))
    if match is None:
        return [name]
    lo, hi = int(match["lo"]), int(match["hi"])
    return [f"{match['name']}{i}" for i in range(lo, hi + 1)]


def _instance_dimensions(instances: Any) -> list[list[str]]:
    """vss-tools ``instances`` semantics: a string or a list of plain names is one dimension;
    a list holding ranges or sub-lists has one dimension per element."""
    if isinstance(instances, str):
        return [_expand_name(instances)]
    if not isinstance(instances, list):
        raise ValueError(f"unsupported VSS instances value {instances!r}")
    if all(
        isinstance(item, str) and _RANGE.match(item.replace(" ", "")) is None for item in instances
    ):
        return [list(instances)]
    dimensions: list[list[str]] = []
    for item in instances:
        if isinstance(item, str):
            dimensions.append(_expand_name(item))
        elif isinstance(item, list):
            dimensions.append([name for sub in item for name in _expand_name(str(sub))])
        else:
            raise ValueError(f"unsupported VSS instances value {instances!r}")
    return dimensions


def _bound(value: Any, path: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{path}: {key} must be a number, got {value!r}")
    return value


def _leaf_spec(path: str, node: Mapping[str, Any]) -> SignalSpec | None:
    datatype = node.get("datatype")
    if not isinstance(datatype, str):
        raise ValueError(f"{path}: {node.get('type')} without a datatype")
    if datatype not in SUPPORTED_DATATYPES:
        return None  # numeric/boolean arrays and struct types: not carried by telemetry v1
    allowed_raw = node.get("allowed")
    allowed: tuple[str, ...] | None = None
    lo = _bound(node.get("min"), path, "min")
    hi = _bound(node.get("max"), path, "max")
    if allowed_raw is not None:
        if not isinstance(allowed_raw, list):
            raise ValueError(f"{path}: allowed must be a list")
        if _KIND_BY_DATATYPE[datatype] in ("string", "string_list"):
            allowed = tuple(str(value) for value in allowed_raw)
        else:
            # Enumerated numbers: the SignalSpec keeps strings only, so enforce their span.
            numbers = [_bound(value, path, "allowed") for value in allowed_raw]
            valid = [n for n in numbers if n is not None]
            if valid:
                lo = max(lo, min(valid)) if lo is not None else min(valid)
                hi = min(hi, max(valid)) if hi is not None else max(valid)
    unit = node.get("unit")
    return SignalSpec(
        path=path,
        datatype=datatype,
        unit=unit if isinstance(unit, str) else None,
        min=lo,
        max=hi,
        allowed=allowed,
        description=str(node.get("description", "")),
    )


def _walk(path: str, node: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Yield ``(path, node)`` for every leaf below ``node``, expanding unexpanded instances."""
    if not isinstance(node, Mapping):
        raise ValueError(f"{path}: VSS node must be an object")
    node_type = node.get("type")
    if node_type in _LEAF_TYPES:
        yield path, node
        return
    if node_type != "branch":
        return  # struct/property definitions and unknown node kinds carry no signals
    children = node.get("children") or {}
    if not isinstance(children, Mapping):
        raise ValueError(f"{path}: children must be an object")
    instances = node.get("instances")
    if instances is None:
        for name, child in children.items():
            yield from _walk(f"{path}.{name}", child)
        return
    # Unexpanded export (`vspec export json --no-expand`): replicate the children under every
    # instance, except those marked `instantiate: false`, which stay directly under the branch.
    dimensions = _instance_dimensions(instances)
    if not dimensions or not all(dimensions):
        raise ValueError(f"{path}: empty instances {instances!r}")
    first_level = set(dimensions[0])
    for name, child in children.items():
        if name in first_level:
            continue  # explicit instance node, walked with its instance below
        if isinstance(child, Mapping) and child.get("instantiate") is False:
            yield from _walk(f"{path}.{name}", child)
    for combo in product(*dimensions):
        prefix = ".".join((path, *combo))
        for name, child in children.items():
            if name in first_level or (
                isinstance(child, Mapping) and child.get("instantiate") is False
            ):
                continue
            yield from _walk(f"{prefix}.{name}", child)
    for name in dimensions[0]:
        explicit = children.get(name)
        if isinstance(explicit, Mapping):  # instance-specific additions, e.g. Row1 only
            for child_name, child in (explicit.get("children") or {}).items():
                yield from _walk(f"{path}.{name}.{child_name}", child)


def load_vss_catalog(path: str | os.PathLike[str]) -> dict[str, SignalSpec]:
    """Flatten a VSS JSON export (``vspec export json``) into ``{path: SignalSpec}``.

    Takes every leaf (sensor, actuator, attribute) under every root of the file. Leaves whose
    datatype telemetry v1 cannot carry (numeric/boolean arrays, structs) are skipped. Raises
    ``OSError`` if the file cannot be read and ``ValueError`` if it is not a VSS tree.
    """
    with open(path, "rb") as fh:
        try:
            tree = orjson.loads(fh.read())
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{os.fspath(path)}: not valid JSON: {exc}") from exc
    if not isinstance(tree, dict) or not tree:
        raise ValueError(f"{os.fspath(path)}: expected an object of VSS root branches")
    if not any(isinstance(root, dict) and root.get("type") == "branch" for root in tree.values()):
        raise ValueError(f"{os.fspath(path)}: no VSS branch at the top level")
    catalog: dict[str, SignalSpec] = {}
    for root_name, root in tree.items():
        for leaf_path, node in _walk(root_name, root):
            spec = _leaf_spec(leaf_path, node)
            if spec is not None:
                catalog[leaf_path] = spec
    return catalog


def merged_catalog(vss_path: str | os.PathLike[str] | None) -> Mapping[str, SignalSpec]:
    """The product catalog plus every signal of the VSS file at ``vss_path`` (if given).

    Product entries win over the file's, since they carry the ranges the product enforces.
    """
    if vss_path is None:
        return CATALOG
    merged = load_vss_catalog(vss_path)
    merged.update(CATALOG)
    return MappingProxyType(merged)
