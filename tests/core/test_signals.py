"""Tests for the signal catalog (core/signals.py), including a check against real VSS 6.0."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from core.signals import (
    CATALOG,
    NUMERIC_SIGNALS,
    SUPPORTED_DATATYPES,
    SignalSpec,
    arrow_type,
    integer_bounds,
    load_vss_catalog,
    merged_catalog,
)

_DEFAULT_VSS = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "vss" / "vss-6.0.json"
)
VSS_REFERENCE = Path(os.environ.get("FLEET_VSS_REFERENCE", _DEFAULT_VSS))

needs_vss = pytest.mark.skipif(
    not VSS_REFERENCE.is_file(),
    reason=f"VSS 6.0 reference export not found at {VSS_REFERENCE} "
    "(set FLEET_VSS_REFERENCE to a `vspec export json` file of VSS 6.0)",
)

_LEAF_TYPES = {"sensor", "actuator", "attribute"}


def _raw_leaves(tree: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Independent walk of an expanded VSS export: (path, node) for each leaf."""
    stack = list(tree.items())
    while stack:
        path, node = stack.pop()
        if node.get("type") == "branch":
            stack.extend((f"{path}.{name}", child) for name, child in node["children"].items())
        elif node.get("type") in _LEAF_TYPES:
            yield path, node


@pytest.fixture(scope="module")
def vss_nodes() -> dict[str, dict[str, Any]]:
    """Every node of the reference file (branches included), keyed by path."""
    nodes: dict[str, dict[str, Any]] = {}
    stack = list(json.loads(VSS_REFERENCE.read_text()).items())
    while stack:
        path, node = stack.pop()
        nodes[path] = node
        stack.extend((f"{path}.{name}", c) for name, c in node.get("children", {}).items())
    return nodes


# --------------------------------------------------------------------------------------------
# The product catalog against real VSS 6.0
# --------------------------------------------------------------------------------------------


@needs_vss
@pytest.mark.parametrize("path", sorted(CATALOG))
def test_catalog_entry_matches_vss_6_0(path: str, vss_nodes: dict[str, dict[str, Any]]) -> None:
    spec = CATALOG[path]
    assert path in vss_nodes, f"{path} does not exist in VSS 6.0"
    node = vss_nodes[path]
    assert node["type"] in _LEAF_TYPES, f"{path} is a {node['type']}, not a leaf"
    assert spec.datatype == node["datatype"]
    assert spec.unit == node.get("unit")
    if "allowed" in node:
        assert spec.allowed is not None, f"{path}: VSS enumerates {node['allowed']}"
        assert set(spec.allowed) <= set(node["allowed"])
    else:
        assert spec.allowed is None
    if "min" in node:
        assert spec.min is not None and spec.min >= node["min"]
    if "max" in node:
        assert spec.max is not None and spec.max <= node["max"]
    assert "deprecation" not in node, f"{path} is deprecated in VSS 6.0: {node['deprecation']}"


# --------------------------------------------------------------------------------------------
# The product catalog on its own
# --------------------------------------------------------------------------------------------

REQUIRED = [
    "Vehicle.Speed",
    "Vehicle.TraveledDistance",
    "Vehicle.CurrentLocation.Latitude",
    "Vehicle.CurrentLocation.Longitude",
    "Vehicle.CurrentLocation.Heading",
    "Vehicle.CurrentLocation.Altitude",
    "Vehicle.CurrentLocation.HorizontalAccuracy",
    "Vehicle.Acceleration.Longitudinal",
    "Vehicle.Acceleration.Lateral",
    "Vehicle.Acceleration.Vertical",
    "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current",
    "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed",
    "Vehicle.Powertrain.TractionBattery.CurrentVoltage",
    "Vehicle.Powertrain.TractionBattery.CurrentCurrent",
    "Vehicle.Powertrain.TractionBattery.Temperature.Min",
    "Vehicle.Powertrain.TractionBattery.Temperature.Max",
    "Vehicle.Powertrain.TractionBattery.Temperature.Average",
    "Vehicle.Powertrain.TractionBattery.CellVoltage.Min",
    "Vehicle.Powertrain.TractionBattery.CellVoltage.Max",
    "Vehicle.Powertrain.TractionBattery.Charging.IsCharging",
    "Vehicle.Powertrain.TractionBattery.Charging.ChargeCurrent.DC",
    "Vehicle.Powertrain.TractionBattery.Charging.ChargeCurrent.Phase1",
    "Vehicle.Powertrain.TractionBattery.Charging.ChargeVoltage.DC",
    "Vehicle.Powertrain.TractionBattery.GrossCapacity",
    "Vehicle.Powertrain.TractionBattery.NetCapacity",
    "Vehicle.Powertrain.TractionBattery.StateOfHealth",
    *(
        f"Vehicle.Chassis.Axle.{row}.Wheel.{side}.{leaf}"
        for row in ("Row1", "Row2")
        for side in ("Left", "Right")
        for leaf in ("Tire.Pressure", "Brake.PadWear")
    ),
    "Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature",
    "Vehicle.LowVoltageBattery.CurrentVoltage",
    "Vehicle.Diagnostics.DTCList",
    "Vehicle.LowVoltageSystemState",
    "Vehicle.Powertrain.Transmission.CurrentGear",
    "Vehicle.Powertrain.Transmission.SelectedGear",
    "Vehicle.Powertrain.CombustionEngine.Speed",
    "Vehicle.Powertrain.FuelSystem.RelativeLevel",
    "Vehicle.Exterior.AirTemperature",
    "Vehicle.Chassis.Accelerator.PedalPosition",
    "Vehicle.Chassis.Brake.PedalPosition",
    "Vehicle.Chassis.SteeringWheel.Angle",
]


@pytest.mark.parametrize("path", REQUIRED)
def test_required_signal_in_catalog(path: str) -> None:
    assert path in CATALOG
    assert CATALOG[path].path == path


def test_design_contract_units() -> None:
    """The units DESIGN.md names for the headline signals."""
    assert CATALOG["Vehicle.Speed"].unit == "km/h"
    assert CATALOG["Vehicle.TraveledDistance"].unit == "m"
    assert CATALOG["Vehicle.TraveledDistance"].datatype == "uint32"
    assert CATALOG["Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"].unit == "percent"
    assert CATALOG["Vehicle.Acceleration.Longitudinal"].unit == "m/s^2"
    assert CATALOG["Vehicle.CurrentLocation.Latitude"].unit == "degrees"
    assert CATALOG["Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature"].unit == (
        "Celsius"
    )
    assert CATALOG["Vehicle.Diagnostics.DTCList"].kind == "string_list"


@pytest.mark.parametrize("path", sorted(CATALOG))
def test_catalog_entry_is_self_consistent(path: str) -> None:
    spec = CATALOG[path]
    assert spec.path.startswith("Vehicle.")
    assert spec.description
    if spec.kind in ("float", "int"):
        # The product enforces a range on every numeric signal.
        assert spec.min is not None and spec.max is not None
        assert spec.min < spec.max
        assert spec.allowed is None
    else:
        assert spec.min is None and spec.max is None
    bounds = integer_bounds(spec.datatype)
    if spec.kind == "int":
        assert bounds is not None
        assert bounds[0] <= spec.min <= spec.max <= bounds[1]  # type: ignore[operator]
        assert float(spec.min).is_integer() and float(spec.max).is_integer()  # type: ignore[arg-type]
    else:
        assert bounds is None


def test_chosen_ranges() -> None:
    lat = CATALOG["Vehicle.CurrentLocation.Latitude"]
    assert (lat.min, lat.max) == (-90.0, 90.0)
    assert CATALOG["Vehicle.CurrentLocation.Longitude"].max == 180.0
    assert CATALOG["Vehicle.TraveledDistance"].max == 2**32 - 1
    tire = CATALOG["Vehicle.Chassis.Axle.Row2.Wheel.Right.Tire.Pressure"]
    assert (tire.min, tire.max) == (0, 1000)
    soc = CATALOG["Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"]
    assert (soc.min, soc.max) == (0.0, 100.0)
    assert CATALOG["Vehicle.LowVoltageSystemState"].allowed == (
        "UNDEFINED",
        "LOCK",
        "OFF",
        "ACC",
        "ON",
        "START",
    )


def test_catalog_is_immutable() -> None:
    with pytest.raises(TypeError):
        CATALOG["Vehicle.Speed"] = CATALOG["Vehicle.Speed"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOG["Vehicle.Speed"].max = 1.0  # type: ignore[misc]


def test_numeric_signals() -> None:
    assert tuple(p for p, s in CATALOG.items() if s.kind in ("float", "int")) == NUMERIC_SIGNALS
    assert "Vehicle.Speed" in NUMERIC_SIGNALS
    assert "Vehicle.TraveledDistance" in NUMERIC_SIGNALS
    assert "Vehicle.Diagnostics.DTCList" not in NUMERIC_SIGNALS
    assert "Vehicle.LowVoltageSystemState" not in NUMERIC_SIGNALS
    assert "Vehicle.Powertrain.TractionBattery.Charging.IsCharging" not in NUMERIC_SIGNALS


# --------------------------------------------------------------------------------------------
# SignalSpec, kind, integer_bounds, arrow_type
# --------------------------------------------------------------------------------------------


def _spec(datatype: str, **kw: Any) -> SignalSpec:
    fields: dict[str, Any] = dict(
        path="Vehicle.X",
        datatype=datatype,
        unit=None,
        min=None,
        max=None,
        allowed=None,
        description="",
    )
    fields.update(kw)
    return SignalSpec(**fields)


@pytest.mark.parametrize(
    ("datatype", "kind"),
    [
        ("float", "float"),
        ("double", "float"),
        ("uint8", "int"),
        ("uint16", "int"),
        ("uint32", "int"),
        ("uint64", "int"),
        ("int8", "int"),
        ("int16", "int"),
        ("int32", "int"),
        ("int64", "int"),
        ("boolean", "bool"),
        ("string", "string"),
        ("string[]", "string_list"),
    ],
)
def test_kind(datatype: str, kind: str) -> None:
    assert _spec(datatype).kind == kind


def test_supported_datatypes() -> None:
    assert "float[]" not in SUPPORTED_DATATYPES
    assert {"float", "uint32", "boolean", "string[]"} <= SUPPORTED_DATATYPES


@pytest.mark.parametrize(
    ("datatype", "bounds"),
    [
        ("uint8", (0, 255)),
        ("uint16", (0, 65535)),
        ("uint32", (0, 4294967295)),
        ("uint64", (0, 18446744073709551615)),
        ("int8", (-128, 127)),
        ("int16", (-32768, 32767)),
        ("int32", (-2147483648, 2147483647)),
        ("int64", (-9223372036854775808, 9223372036854775807)),
        ("float", None),
        ("double", None),
        ("boolean", None),
        ("string", None),
        ("string[]", None),
        ("uint8[]", None),
    ],
)
def test_integer_bounds(datatype: str, bounds: tuple[int, int] | None) -> None:
    assert integer_bounds(datatype) == bounds


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"datatype": "float[]"}, "unsupported"),
        ({"datatype": "Types.Struct"}, "unsupported"),
        ({"datatype": "float", "min": 5.0, "max": 1.0}, "min"),
        ({"datatype": "uint8", "max": 256}, "outside"),
        ({"datatype": "int8", "min": -129}, "outside"),
        ({"datatype": "boolean", "min": 0}, "non-numeric"),
        ({"datatype": "uint8", "allowed": ("A",)}, "allowed"),
    ],
)
def test_signal_spec_rejects_inconsistent_definitions(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _spec(**kwargs)


@pytest.mark.parametrize(
    ("datatype", "expected"),
    [
        ("float", pa.float64()),
        ("double", pa.float64()),
        ("uint8", pa.int64()),
        ("int16", pa.int64()),
        ("uint32", pa.int64()),
        ("boolean", pa.bool_()),
        ("string", pa.string()),
        ("string[]", pa.list_(pa.string())),
    ],
)
def test_arrow_type(datatype: str, expected: pa.DataType) -> None:
    assert arrow_type(_spec(datatype)) == expected


def test_arrow_schema_for_whole_catalog_holds_sample_values() -> None:
    schema = pa.schema([pa.field(p, arrow_type(s)) for p, s in CATALOG.items()])
    assert len(schema) == len(CATALOG)
    samples = {
        "float": 1.5,
        "int": 7,
        "bool": True,
        "string": "ON",
        "string_list": ["P0300"],
    }
    row = {p: [samples[s.kind]] for p, s in CATALOG.items()}
    table = pa.Table.from_pydict(row, schema=schema)
    assert table.num_rows == 1
    assert table.column("Vehicle.Diagnostics.DTCList").to_pylist() == [["P0300"]]
    assert table.schema.field("Vehicle.TraveledDistance").type == pa.int64()


# --------------------------------------------------------------------------------------------
# Bring your own VSS catalog: the real VSS 6.0 export
# --------------------------------------------------------------------------------------------


@needs_vss
def test_load_vss_catalog_on_vss_6_0() -> None:
    loaded = load_vss_catalog(VSS_REFERENCE)
    raw = dict(_raw_leaves(json.loads(VSS_REFERENCE.read_text())))
    # 1,267 leaves in VSS 6.0; the float[]/uint8[] ones cannot travel in telemetry v1.
    assert 1200 <= len(raw) <= 1350
    carried = {p for p, n in raw.items() if n["datatype"] in SUPPORTED_DATATYPES}
    assert set(loaded) == carried
    assert len(raw) - len(loaded) == sum(
        1 for n in raw.values() if n["datatype"] not in SUPPORTED_DATATYPES
    )
    assert 1200 <= len(loaded) <= len(raw)
    assert "Vehicle.Powertrain.TractionBattery.CellVoltage.CellVoltages" not in loaded

    speed = loaded["Vehicle.Speed"]
    assert (speed.datatype, speed.unit, speed.min, speed.max) == ("float", "km/h", None, None)
    assert speed.description == "Vehicle speed."
    odo = loaded["Vehicle.TraveledDistance"]
    assert (odo.datatype, odo.unit, odo.kind) == ("uint32", "m", "int")
    lat = loaded["Vehicle.CurrentLocation.Latitude"]
    assert (lat.datatype, lat.unit, lat.min, lat.max) == ("double", "degrees", -90, 90)
    soc = loaded["Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"]
    assert (soc.unit, soc.min, soc.max) == ("percent", 0, 100)
    state = loaded["Vehicle.LowVoltageSystemState"]
    assert state.allowed == ("UNDEFINED", "LOCK", "OFF", "ACC", "ON", "START")
    assert loaded["Vehicle.Diagnostics.DTCList"].kind == "string_list"
    assert loaded["Vehicle.Powertrain.TractionBattery.Charging.IsCharging"].kind == "bool"
    assert loaded["Vehicle.VehicleIdentification.VIN"].kind == "string"  # an attribute
    assert loaded["Vehicle.Chassis.Axle.Row2.Wheel.Right.Tire.Pressure"].unit == "kPa"
    assert all(p == s.path for p, s in loaded.items())
    assert not any(p.startswith("Vehicle.OBD.") for p in loaded)  # removed in 6.0


@needs_vss
def test_merged_catalog_with_vss_6_0() -> None:
    merged = merged_catalog(VSS_REFERENCE)
    loaded = load_vss_catalog(VSS_REFERENCE)
    assert set(merged) == set(loaded) | set(CATALOG)
    assert set(CATALOG) <= set(loaded)  # the product uses only real VSS 6.0 signals
    # Product entries win: they carry the enforced ranges VSS leaves open.
    assert merged["Vehicle.Speed"] is CATALOG["Vehicle.Speed"]
    assert merged["Vehicle.Speed"].max == CATALOG["Vehicle.Speed"].max is not None
    assert (
        merged["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"]
        == loaded["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"]
    )
    with pytest.raises(TypeError):
        merged["Vehicle.Speed"] = CATALOG["Vehicle.Speed"]  # type: ignore[index]


def test_merged_catalog_without_file_is_the_product_catalog() -> None:
    assert merged_catalog(None) is CATALOG


# --------------------------------------------------------------------------------------------
# Bring your own VSS catalog: hand-written exports
# --------------------------------------------------------------------------------------------


def _write(tmp_path: Path, tree: Any) -> Path:
    path = tmp_path / "vss.json"
    path.write_text(json.dumps(tree))
    return path


def test_load_expanded_tree_with_custom_signals(tmp_path: Path) -> None:
    tree = {
        "Vehicle": {
            "type": "branch",
            "description": "root",
            "children": {
                "Speed": {
                    "type": "sensor",
                    "datatype": "float",
                    "unit": "km/h",
                    "description": "Vehicle speed.",
                },
                "Acme": {
                    "type": "branch",
                    "description": "OEM extension",
                    "children": {
                        "Mode": {
                            "type": "actuator",
                            "datatype": "string",
                            "allowed": ["ECO", "SPORT"],
                            "description": "Drive mode.",
                        },
                        "Level": {
                            "type": "sensor",
                            "datatype": "uint8",
                            "allowed": [1, 2, 3],
                            "description": "Level.",
                        },
                        "Cells": {"type": "sensor", "datatype": "float[]", "description": "x"},
                        "Pos": {
                            "type": "sensor",
                            "datatype": "Types.Position",
                            "description": "struct",
                        },
                        "Raw": {
                            "type": "sensor",
                            "datatype": "int16",
                            "min": -5,
                            "max": 5,
                            "description": "Raw.",
                        },
                    },
                },
            },
        }
    }
    loaded = load_vss_catalog(_write(tmp_path, tree))
    assert set(loaded) == {
        "Vehicle.Speed",
        "Vehicle.Acme.Mode",
        "Vehicle.Acme.Level",
        "Vehicle.Acme.Raw",
    }
    assert loaded["Vehicle.Acme.Mode"].allowed == ("ECO", "SPORT")
    level = loaded["Vehicle.Acme.Level"]
    assert (level.allowed, level.min, level.max) == (None, 1, 3)
    raw = loaded["Vehicle.Acme.Raw"]
    assert (raw.min, raw.max, raw.unit) == (-5, 5, None)
    # A custom signal becomes valid through the merged catalog; product entries still win.
    merged = merged_catalog(tmp_path / "vss.json")
    assert "Vehicle.Acme.Mode" in merged
    assert merged["Vehicle.Speed"] is CATALOG["Vehicle.Speed"]
    assert len(merged) == len(CATALOG) + 3


def test_load_unexpanded_tree_expands_instances(tmp_path: Path) -> None:
    """`vspec export json --no-expand` keeps `instances`; they are expanded like vss-tools."""
    tree = {
        "Vehicle": {
            "type": "branch",
            "description": "root",
            "children": {
                "Axle": {
                    "type": "branch",
                    "description": "Axles",
                    "instances": "Row[1,2]",
                    "children": {
                        "Wheel": {
                            "type": "branch",
                            "description": "Wheels",
                            "instances": ["Left", "Right"],
                            "children": {
                                "Pressure": {
                                    "type": "sensor",
                                    "datatype": "uint16",
                                    "unit": "kPa",
                                    "description": "p",
                                },
                            },
                        },
                        "AxleCount": {
                            "type": "attribute",
                            "datatype": "uint8",
                            "instantiate": False,
                            "description": "n",
                        },
                    },
                },
                "Door": {
                    "type": "branch",
                    "description": "Doors",
                    "instances": ["Row[1,2]", ["DriverSide", "PassengerSide"]],
                    "children": {
                        "IsOpen": {
                            "type": "actuator",
                            "datatype": "boolean",
                            "description": "open",
                        },
                    },
                },
            },
        }
    }
    loaded = load_vss_catalog(_write(tmp_path, tree))
    assert set(loaded) == {
        *(f"Vehicle.Axle.Row{r}.Wheel.{s}.Pressure" for r in (1, 2) for s in ("Left", "Right")),
        "Vehicle.Axle.AxleCount",
        *(
            f"Vehicle.Door.Row{r}.{s}.IsOpen"
            for r in (1, 2)
            for s in ("DriverSide", "PassengerSide")
        ),
    }
    assert loaded["Vehicle.Axle.Row2.Wheel.Left.Pressure"].unit == "kPa"


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        "{}",
        '{"Vehicle": {"type": "sensor", "datatype": "float"}}',
        '{"Vehicle": {"type": "branch", "children": {"X": {"type": "sensor"}}}}',
        '{"Vehicle": {"type": "branch", "children": {"X": {"type": "sensor", '
        '"datatype": "float", "min": "low"}}}}',
        '{"Vehicle": {"type": "branch", "children": {"X": {"type": "sensor", '
        '"datatype": "uint8", "max": 300}}}}',
    ],
)
def test_load_rejects_malformed_exports(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError):
        load_vss_catalog(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_vss_catalog(tmp_path / "absent.json")
