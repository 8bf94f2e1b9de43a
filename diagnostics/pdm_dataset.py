"""Labelled training sets for predictive maintenance: feature snapshots plus ground truth.

A *snapshot* is a vehicle's feature vector at a window end ``T`` (every
``snapshot_every_h`` hours of its data, from ``first_snapshot_h`` after its first hour). For
each component and horizon ``h`` its label is 1 when the component fails in ``(T, T + h]``,
0 otherwise, and the snapshot is left out for that component when the failure was at or before
``T`` (the vehicle would be in the workshop) or the component does not apply to the vehicle.

Two sources, one code path (:func:`snapshot_features` over an Arrow table of samples):

* :func:`simulate_training_set`: a simulated fleet (``simulator``) with injected faults,
  simulated vehicle by vehicle (optionally in worker processes) and never stored as telemetry;
* :func:`archive_training_set`: the Parquet archive plus a labels file written by
  ``simulator.labels.write_labels`` (later: service outcomes in the same format).
  :func:`simulate_to_archive` writes a simulated fleet there, so both can be compared.

Simulated sampling: every 5 s while driving or charging and every 30 minutes while parked
(``SimConfig(sample_interval_s=5, parked_sample_interval_s=1800)``), so 300 vehicles over seven
weeks take about ten CPU minutes instead of hours at 1 Hz. The features are hourly means,
extremes and multi-day trends of degradation that unfolds over weeks, and parked signals
(resting voltage, cooling tyres and coolant) change over tens of minutes, so they barely depend
on the rate. The driving interval cannot be coarser: the simulator integrates braking energy,
hence natural pad wear, from the sampled speed profile, and at 60 s it misses nearly all braking
(docs/pdm.md has the measurements).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from diagnostics.features import (
    BUCKET_MS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    INPUT_COLUMNS,
    FeatureFrame,
    IntArray,
    bucketize,
    window_features,
)
from diagnostics.pdm_components import BY_NAME, COMPONENT_NAMES, component_of_label

log = logging.getLogger("diagnostics.pdm")

DAY_MS = 86_400_000
DEFAULT_START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # a Monday, midnight UTC
HEALTHY = "healthy"


@dataclass(frozen=True)
class SimulationPlan:
    """A simulated training fleet. The defaults are the documented evaluation run."""

    vehicles: int = 300
    days: float = 49.0
    seed: int = 7
    faulty_share: float = 0.7
    """Share of vehicles with one injected fault; the kinds are balanced per powertrain."""
    bev_share: float = 0.5
    commercial_share: float = 0.2
    fault_horizon_days: float | None = None
    """Onset and failure fall inside ``[0, horizon]`` (``simulator.faults.random_fault``).
    Default ``days + 21``, so some faults fail after the observed window (still labelled)."""
    fault_kinds: tuple[str, ...] | None = None
    """Restrict the kinds (``simulator.faults.FaultKind`` values); None: all."""
    sample_interval_s: float = 5.0
    """While driving or charging (see the module docstring for why not coarser)."""
    parked_sample_interval_s: float = 1800.0
    snapshot_every_h: int = 12
    first_snapshot_h: int = 24
    start: dt.datetime = DEFAULT_START

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def horizon_s(self) -> float:
        days = self.fault_horizon_days if self.fault_horizon_days is not None else self.days + 21
        return days * 86_400.0

    def describe(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["start"] = self.start.isoformat()
        out["fault_kinds"] = list(self.fault_kinds) if self.fault_kinds else None
        return out


@dataclass
class TrainingSet:
    """Snapshots (rows) with their features and per-component ground truth."""

    features: FeatureFrame
    failure_ms: dict[str, IntArray]
    """Per component: when it fails on the row's vehicle (epoch ms), -1 if it does not."""
    onset_ms: dict[str, IntArray]
    """Per component: when its degradation starts, -1 if never."""
    observed_until_ms: IntArray
    """The vehicle's newest sample in the source (failures after it are not seen happen)."""
    vehicle_kind: npt.NDArray[np.str_]
    """The vehicle's injected fault type or ``healthy``: folds are stratified on it."""
    snapshot_every_h: int
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def vins(self) -> npt.NDArray[np.str_]:
        return self.features.vins

    @property
    def end_ms(self) -> IntArray:
        return self.features.end_ms

    def labels(self, component: str, horizon_days: int) -> npt.NDArray[np.int8]:
        """1 = fails within the horizon after the snapshot, 0 = does not, -1 = left out
        (already failed, or the component does not apply to the vehicle)."""
        failure = self.failure_ms[component]
        end = self.features.end_ms
        y = ((failure > end) & (failure <= end + horizon_days * DAY_MS)).astype(np.int8)
        failed = (failure >= 0) & (failure <= end)
        applies = ~np.isnan(self.features.column(BY_NAME[component].requires))
        y[failed | ~applies] = -1
        return y

    def take(self, rows: npt.NDArray[Any]) -> TrainingSet:
        return TrainingSet(
            self.features.take(rows),
            {c: a[rows] for c, a in self.failure_ms.items()},
            {c: a[rows] for c, a in self.onset_ms.items()},
            self.observed_until_ms[rows],
            self.vehicle_kind[rows],
            self.snapshot_every_h,
            dict(self.source),
        )

    def sha256(self) -> str:
        """A hash of the content (features, snapshot keys, ground truth), stored with every
        model trained on it: two models with the same hash saw exactly the same data."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.features.version, list(self.features.names)]).encode())
        digest.update("\n".join(self.features.vins.tolist()).encode())
        for array in (self.features.end_ms, self.observed_until_ms):
            digest.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
        digest.update(np.ascontiguousarray(self.features.values, dtype="<f8").tobytes())
        for component in sorted(self.failure_ms):
            digest.update(component.encode())
            digest.update(np.ascontiguousarray(self.failure_ms[component], "<i8").tobytes())
            digest.update(np.ascontiguousarray(self.onset_ms[component], "<i8").tobytes())
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {
            "rows": len(self),
            "vehicles": int(len(np.unique(self.vins))),
            "snapshot_every_h": self.snapshot_every_h,
            "sha256": self.sha256(),
            "source": self.source,
        }

    def to_parquet(self, path: str | Path) -> Path:
        path = Path(path)
        table = self.features.to_arrow()
        for component in COMPONENT_NAMES:
            table = table.append_column(f"failure_ms.{component}", pa.array(
                self.failure_ms[component], pa.int64()))  # fmt: skip
            table = table.append_column(f"onset_ms.{component}", pa.array(
                self.onset_ms[component], pa.int64()))  # fmt: skip
        table = table.append_column("observed_until_ms", pa.array(self.observed_until_ms))
        table = table.append_column("vehicle_kind", pa.array(self.vehicle_kind.tolist()))
        meta = {
            "feature_version": self.features.version,
            "snapshot_every_h": str(self.snapshot_every_h),
            "source": json.dumps(self.source),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
        tmp.replace(path)
        return path

    @classmethod
    def from_parquet(cls, path: str | Path) -> TrainingSet:
        table = pq.read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        extra = [n for n in table.column_names if n.startswith(("failure_ms.", "onset_ms."))]
        extra += ["observed_until_ms", "vehicle_kind"]
        frame = FeatureFrame.from_arrow(table.drop_columns(extra).replace_schema_metadata(
            {"feature_version": meta.get("feature_version", "")}))  # fmt: skip

        def ints(name: str) -> IntArray:
            return np.asarray(table[name].to_numpy(), dtype=np.int64)

        return cls(
            frame,
            {c: ints(f"failure_ms.{c}") for c in COMPONENT_NAMES},
            {c: ints(f"onset_ms.{c}") for c in COMPONENT_NAMES},
            ints("observed_until_ms"),
            np.asarray(table["vehicle_kind"].to_pylist(), dtype="<U32"),
            int(meta.get("snapshot_every_h", "12")),
            json.loads(meta.get("source", "{}")),
        )


# -- snapshots ---------------------------------------------------------------------------------
def snapshot_features(
    table: pa.Table, *, every_h: int = 12, first_h: int = 24
) -> tuple[FeatureFrame, dict[str, int]]:
    """Features of every vehicle in ``table`` at window ends on the UTC grid of ``every_h``
    hours, from ``first_h`` after the grid point at or before its first sample to the grid
    point at or after its last. Returns the frame and each vehicle's last sample (epoch ms)."""
    if every_h <= 0 or first_h < 0:
        raise ValueError("every_h must be > 0 and first_h >= 0")
    buckets = bucketize(table)
    if not len(buckets):
        return window_features(buckets, [], []), {}
    grid = every_h * BUCKET_MS
    first, last = buckets.hour_range()
    newest = buckets.newest_sample_ms()
    vins: list[str] = []
    ends: list[IntArray] = []
    for i, vin in enumerate(buckets.vins.tolist()):
        start = (first[i] * BUCKET_MS // grid) * grid + first_h * BUCKET_MS
        stop = -(-((last[i] + 1) * BUCKET_MS) // grid) * grid
        points = np.arange(start, stop + 1, grid, dtype=np.int64)
        vins.extend([vin] * len(points))
        ends.append(points)
    end_ms = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    frame = window_features(buckets, vins, end_ms)
    return frame, {v: int(newest[i]) for i, v in enumerate(buckets.vins.tolist())}


@dataclass(frozen=True)
class VehicleTruth:
    """Ground truth of one vehicle: per component (failure_ms, onset_ms)."""

    kind: str
    faults: dict[str, tuple[int, int]]


def _truth_from_labels(labels: Iterable[Any]) -> dict[str, VehicleTruth]:
    faults: dict[str, dict[str, tuple[int, int]]] = {}
    kinds: dict[str, str] = {}
    for label in labels:
        component = component_of_label(label.component)
        if component is None:
            continue
        mine = faults.setdefault(label.vin, {})
        failure, onset = int(label.failure_ts), int(label.onset_ts)
        if component not in mine or failure < mine[component][0]:
            mine[component] = (failure, onset)
        kinds[label.vin] = str(label.fault_type) if label.vin not in kinds else "multiple"
    return {vin: VehicleTruth(kinds[vin], f) for vin, f in faults.items()}


def _assemble(
    frames: Sequence[FeatureFrame],
    newest: dict[str, int],
    truth: dict[str, VehicleTruth],
    every_h: int,
    source: dict[str, Any],
) -> TrainingSet:
    frame = FeatureFrame.concat(frames)
    order = np.lexsort((frame.end_ms, frame.vins))
    frame = frame.take(order)
    n = len(frame)
    failure = {c: np.full(n, -1, dtype=np.int64) for c in COMPONENT_NAMES}
    onset = {c: np.full(n, -1, dtype=np.int64) for c in COMPONENT_NAMES}
    kind = np.full(n, HEALTHY, dtype="<U32")
    observed = np.zeros(n, dtype=np.int64)
    vins, starts = np.unique(frame.vins, return_index=True)
    bounds = np.append(starts, n)
    for i, vin in enumerate(vins.tolist()):
        rows = slice(bounds[i], bounds[i + 1])
        observed[rows] = newest.get(vin, -1)
        vehicle = truth.get(vin)
        if vehicle is None:
            continue
        kind[rows] = vehicle.kind
        for component, (fail_ms, onset_ms) in vehicle.faults.items():
            failure[component][rows] = fail_ms
            onset[component][rows] = onset_ms
    return TrainingSet(frame, failure, onset, observed, kind, every_h, source)


# -- simulation --------------------------------------------------------------------------------
def plan_fleet(plan: SimulationPlan) -> list[Any]:
    """The fleet of ``plan``: ``make_fleet`` profiles with one fault on ``faulty_share`` of the
    vehicles, the fault kinds taken in turn per powertrain so every kind is represented."""
    from simulator.faults import FaultKind, kinds_for, random_fault
    from simulator.fleet import make_fleet

    shares = plan.bev_share, plan.commercial_share
    healthy = make_fleet(plan.vehicles, plan.seed, bev_share=shares[0], commercial_share=shares[1])
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 0x9D4]))
    faulty = sorted(int(i) for i in rng.permutation(plan.vehicles)[
        : round(plan.vehicles * plan.faulty_share)])  # fmt: skip
    allowed = {FaultKind(k) for k in plan.fault_kinds} if plan.fault_kinds else set(FaultKind)
    turn = {True: 0, False: 0}
    mapping = {}
    for index in faulty:
        bev = healthy[index].is_bev
        kinds = [k for k in kinds_for(bev) if k in allowed]
        if not kinds:
            continue
        kind = kinds[turn[bev] % len(kinds)]
        turn[bev] += 1
        mapping[index] = [random_fault(kind, rng, plan.horizon_s)]
    return make_fleet(
        plan.vehicles, plan.seed, bev_share=shares[0], commercial_share=shares[1], faults=mapping
    )


def samples_table(messages: Iterable[Any], columns: Sequence[str] = INPUT_COLUMNS) -> pa.Table:
    """Telemetry messages as an Arrow table of ``columns`` with the archive's types (the same
    table the archive would return for them)."""
    from ingestion.archive import archive_schema

    schema = archive_schema()
    signal_columns = [c for c in columns if c not in ("vin", "ts")]
    vins: list[str] = []
    ts: list[int] = []
    values: dict[str, list[Any]] = {c: [] for c in signal_columns}
    for message in messages:
        for sample in message.samples:
            vins.append(message.vin)
            ts.append(sample.ts)
            signals = sample.signals
            for column in signal_columns:
                values[column].append(signals.get(column))
    arrays: dict[str, pa.Array] = {
        "vin": pa.array(vins, pa.string()),
        "ts": pa.array(ts, pa.int64()).cast(schema.field("ts").type),
    }
    for column in signal_columns:
        arrays[column] = pa.array(values[column], schema.field(column).type)
    return pa.table(arrays)


def _sim_config(plan: SimulationPlan) -> Any:
    from simulator.delivery import SimConfig

    return SimConfig(
        sample_interval_s=plan.sample_interval_s,
        samples_per_message=60,
        parked_sample_interval_s=plan.parked_sample_interval_s,
    )


def _simulate_vehicle_snapshots(
    args: tuple[Any, SimulationPlan],
) -> tuple[FeatureFrame, dict[str, int]]:
    """One vehicle: simulate, tabulate, snapshot. Runs in a worker process."""
    from simulator.runner import iter_messages

    profile, plan = args
    messages = iter_messages(
        [profile], plan.start_ms, plan.days * 86_400.0, seed=plan.seed, config=_sim_config(plan)
    )
    table = samples_table(messages)
    return snapshot_features(table, every_h=plan.snapshot_every_h, first_h=plan.first_snapshot_h)


def simulate_training_set(
    plan: SimulationPlan,
    *,
    workers: int = 1,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingSet:
    """Simulate ``plan`` and build its training set; with ``cache_dir``, a set built before
    for the same plan and feature version is read back instead. ``workers > 1`` simulates in
    that many processes, started with ``spawn`` (no fork of a process that may already run
    OpenMP threads), so a calling script needs the ``if __name__ == "__main__":`` guard."""
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(
            json.dumps([plan.describe(), FEATURE_VERSION, list(FEATURE_NAMES)]).encode()
        ).hexdigest()[:16]
        cache = Path(cache_dir) / f"pdm-sim-{key}.parquet"
        if cache.exists():
            log.info("training set from cache %s", cache)
            return TrainingSet.from_parquet(cache)
    from simulator.labels import fault_labels

    fleet = plan_fleet(plan)
    truth = _truth_from_labels(fault_labels(fleet, plan.start_ms))
    frames: list[FeatureFrame] = []
    newest: dict[str, int] = {}
    started = time.monotonic()
    jobs = [(profile, plan) for profile in fleet]

    def collect(done: int, result: tuple[FeatureFrame, dict[str, int]]) -> None:
        frames.append(result[0])
        newest.update(result[1])
        if progress is not None:
            progress(done, len(jobs))
        if done == len(jobs) or done % max(1, len(jobs) // 10) == 0:
            log.info(
                "simulated %d/%d vehicles (%.0f s)", done, len(jobs), time.monotonic() - started
            )

    if workers <= 1:
        for done, job in enumerate(jobs, start=1):
            collect(done, _simulate_vehicle_snapshots(job))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = pool.map(_simulate_vehicle_snapshots, jobs, chunksize=4)
            for done, result in enumerate(results, start=1):
                collect(done, result)
    source = {"kind": "simulation", "plan": plan.describe()}
    training = _assemble(frames, newest, truth, plan.snapshot_every_h, source)
    if cache is not None:
        training.to_parquet(cache)
    return training


def simulate_to_archive(plan: SimulationPlan, archive: str, labels_path: str | Path) -> int:
    """Write the telemetry of ``plan`` into the Parquet archive at ``archive`` (through the
    archive's own writer) and its fault labels to ``labels_path``; returns the rows written."""
    from core.signals import CATALOG
    from ingestion.archive import ParquetArchive, RowBuffer
    from simulator.labels import fault_labels, write_labels
    from simulator.runner import iter_messages

    fleet = plan_fleet(plan)
    target = ParquetArchive(archive)
    rows = 0
    for offset, profile in enumerate(fleet):
        buffer = RowBuffer()
        messages = iter_messages(
            [profile], plan.start_ms, plan.days * 86_400.0, seed=plan.seed,
            config=_sim_config(plan),
        )  # fmt: skip
        for n, message in enumerate(messages):
            buffer.add(
                message, topic="sim", partition=offset, offset=n, received_at=None,
                catalog=CATALOG, size=0,
            )  # fmt: skip
        rows += target.write_roll(buffer).rows
    write_labels(labels_path, fault_labels(fleet, plan.start_ms))
    return rows


# -- the archive -------------------------------------------------------------------------------
def archive_training_set(
    archive: str,
    labels_path: str | Path,
    *,
    snapshot_every_h: int = 12,
    first_snapshot_h: int = 24,
    vehicles_per_read: int = 64,
) -> TrainingSet:
    """The training set of the vehicles in the archive at ``archive`` with the ground truth
    in ``labels_path`` (``.jsonl`` or ``.parquet``, ``simulator.labels`` format). Vehicles are
    read a group at a time, so memory stays bounded by the group."""
    from ingestion.archive import ParquetArchive
    from simulator.labels import read_labels

    dataset = ParquetArchive(archive).dataset()
    present = set(dataset.schema.names)
    columns = [c for c in INPUT_COLUMNS if c in present]
    all_vins = sorted(set(dataset.to_table(columns=["vin"])["vin"].to_pylist()))
    truth = _truth_from_labels(read_labels(labels_path))
    frames: list[FeatureFrame] = []
    newest: dict[str, int] = {}
    started = time.monotonic()
    for i in range(0, len(all_vins), vehicles_per_read):
        group = all_vins[i : i + vehicles_per_read]
        table = dataset.to_table(columns=columns, filter=ds.field("vin").isin(group))
        frame, last = snapshot_features(table, every_h=snapshot_every_h, first_h=first_snapshot_h)
        frames.append(frame)
        newest.update(last)
        log.info(
            "read %d/%d vehicles from the archive (%.0f s)",
            min(i + vehicles_per_read, len(all_vins)), len(all_vins), time.monotonic() - started,
        )  # fmt: skip
    source = {"kind": "archive", "archive": archive, "labels": str(labels_path)}
    return _assemble(frames, newest, truth, snapshot_every_h, source)
