"""Every signal the simulator emits is a real VSS 6.0 leaf, is in the product catalog
(``core.signals.CATALOG``) and stays within each spec's datatype, range and allowed values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from core.signals import CATALOG, integer_bounds
from core.telemetry import Sample
from core.vin import make_vin
from simulator import vss
from simulator.delivery import SimConfig
from simulator.faults import FaultKind, FaultSpec
from simulator.fleet import Powertrain, Usage, make_fleet, with_faults
from simulator.runner import iter_messages
from tests.simulator.support import START_MS

VSS_JSON = Path(__file__).resolve().parents[3] / "shared" / "data" / "vss" / "vss-6.0.json"
_PY_TYPES = {"float": (float,), "int": (int,), "bool": (bool,), "string": (str,)}


def _vss_leaves() -> dict[str, dict[str, Any]]:
    leaves: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        if "children" in node:
            for name, child in node["children"].items():
                walk(child, f"{path}.{name}")
        else:
            leaves[path] = node

    tree = json.loads(VSS_JSON.read_text())
    walk(tree["Vehicle"], "Vehicle")
    return leaves


@pytest.mark.skipif(not VSS_JSON.exists(), reason="shared/data/vss/vss-6.0.json not present")
def test_every_emitted_path_is_a_vss_6_leaf_with_that_datatype() -> None:
    leaves = _vss_leaves()
    for path in vss.ALL_SIGNALS:
        assert path in leaves, f"{path} is not a VSS 6.0 leaf"
        assert leaves[path]["datatype"] == CATALOG[path].datatype, path


def test_every_emitted_path_is_in_the_catalog() -> None:
    assert [p for p in vss.ALL_SIGNALS if p not in CATALOG] == []


def _diverse_samples() -> list[Sample]:
    """Eight hours of a mixed fleet: driving, parking, AC and DC charging, refuelling, and every
    fault past failure (the most extreme values)."""
    fleet = make_fleet(8, seed=51, commercial_share=0.5)
    bev = next(v for v in fleet if v.powertrain is Powertrain.BEV)
    ice = next(v for v in fleet if v.powertrain is Powertrain.ICE)
    extra = [
        with_faults(
            dataclasses.replace(bev, vin=make_vin("5V9", "AE1B5", "S", "A", 999_001),
                                usage=Usage.COMMERCIAL, initial_soc_pct=11.0),
            FaultSpec(FaultKind.CELL_IMBALANCE, 0, 3600),
            FaultSpec(FaultKind.TIRE_LEAK, 0, 1800, wheel="Row1.Wheel.Left"),
            FaultSpec(FaultKind.BRAKE_PAD_WEAR, 0, 1800, wheel="Row2.Wheel.Right"),
            FaultSpec(FaultKind.WEAK_LV_BATTERY, 0, 3600),
        ),
        with_faults(
            dataclasses.replace(ice, vin=make_vin("JK9", "CR3V4", "S", "T", 999_002),
                                usage=Usage.COMMERCIAL, initial_fuel_pct=8.0),
            FaultSpec(FaultKind.COOLANT_PUMP, 0, 3600),
        ),
    ]  # fmt: skip
    vins = [v.vin for v in fleet + extra]
    assert len(set(vins)) == len(vins)
    config = SimConfig(sample_interval_s=3.0, samples_per_message=30)
    return [
        s
        for m in iter_messages(fleet + extra, START_MS, 8 * 3600, seed=2, config=config)
        for s in m.samples
    ]


def test_emitted_values_are_within_each_spec() -> None:
    seen: set[str] = set()
    for sample in _diverse_samples():
        for path, value in sample.signals.items():
            spec = CATALOG[path]
            seen.add(path)
            kind = spec.kind
            if kind == "string_list":
                assert isinstance(value, list) and all(isinstance(x, str) for x in value)
                continue
            assert type(value) in _PY_TYPES[kind], (path, value)
            if spec.allowed is not None:
                assert value in spec.allowed, (path, value)
            if isinstance(value, (int, float)) and kind in ("float", "int"):
                assert spec.min is None or value >= spec.min, (path, value)
                assert spec.max is None or value <= spec.max, (path, value)
                bounds = integer_bounds(spec.datatype)
                if bounds is not None:
                    assert bounds[0] <= value <= bounds[1], (path, value)
    assert seen == set(vss.ALL_SIGNALS)
