"""Ground-truth labels of the injected faults, for training and evaluating predictive
maintenance: one row per fault with the VIN, the component, the fault type, the onset and the
failure time (epoch ms), the signal that carries the signature and the DTCs it can set.

Written as JSON Lines (``.jsonl``) or Parquet (``.parquet``), chosen by the file suffix
(``core.labels``, the format proactive service's outcomes use too); times are epoch
milliseconds (int64), like the ``ts`` of the telemetry samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from core.labels import read_label_rows, write_label_rows
from simulator.faults import DTCS
from simulator.fleet import VehicleProfile


@dataclass(frozen=True)
class FaultLabel:
    vin: str
    component: str
    """E.g. ``tire.row1.left``, ``engine.coolant_pump``, ``low_voltage_battery``,
    ``brake_pad.row2.right``, ``traction_battery.cells``."""
    fault_type: str
    """A ``simulator.faults.FaultKind`` value."""
    onset_ts: int
    """Epoch ms when the degradation starts."""
    failure_ts: int
    """Epoch ms when the component counts as failed."""
    signal: str
    dtcs: tuple[str, ...]


def fault_labels(fleet: Sequence[VehicleProfile], start_ms: int) -> list[FaultLabel]:
    """The labels of every fault in ``fleet`` for a simulation that starts at ``start_ms``."""
    return [
        FaultLabel(
            vin=vehicle.vin,
            component=fault.component,
            fault_type=str(fault.kind),
            onset_ts=int(start_ms + round(fault.onset_s * 1000)),
            failure_ts=int(start_ms + round(fault.failure_s * 1000)),
            signal=fault.signal,
            dtcs=DTCS[fault.kind],
        )
        for vehicle in fleet
        for fault in vehicle.faults
    ]


def write_labels(path: str | Path, labels: Iterable[FaultLabel]) -> Path:
    """Write ``labels`` to ``path`` (``.jsonl`` or ``.parquet``, ``core.labels``); returns the
    path."""
    write_label_rows(path, (asdict(label) for label in labels))
    return Path(path)


def read_labels(path: str | Path) -> list[FaultLabel]:
    return [FaultLabel(**(row | {"dtcs": tuple(row["dtcs"])})) for row in read_label_rows(path)]
