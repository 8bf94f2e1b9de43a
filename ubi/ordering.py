"""One definition of "a vehicle's samples in time order", shared by the streaming workers and
the batch commands, so both see exactly the same samples.

Telemetry arrives in Kafka order (one partition per vehicle, offsets ascending, samples in a
message in time order). A sample is kept when it is strictly newer than every sample of its
vehicle that arrived before it; late samples (a buffered backlog sent after newer data) and
re-sent duplicates are dropped and counted. The decision depends only on the arrival sequence,
never on how it is cut into batches, and the per-vehicle state is one timestamp.

The batch commands replay the Parquet archive in the same order: per Kafka partition, by
offset, and by time within a message (``arrival_order``, which the workers apply to their
batches too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.columns import timestamps_ms

_NONE = np.iinfo(np.int64).min


@dataclass
class ArrivalGate:
    newest: dict[str, int] = field(default_factory=dict)
    """Newest sample time (epoch ms) kept per VIN."""
    dropped: int = 0

    def filter(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` (in arrival order) that are newer than everything of their
        vehicle before them."""
        if table.num_rows == 0:
            return table
        vin = np.asarray(table["vin"].to_numpy(zero_copy_only=False), dtype=object)
        ts = timestamps_ms(table)
        order = np.argsort(vin, kind="stable")  # arrival order within each vehicle
        sorted_vin = vin[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_vin[1:] != sorted_vin[:-1])))
        ends = np.append(starts[1:], len(order))
        keep = np.zeros(len(ts), dtype=bool)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            rows = order[a:b]
            key = str(sorted_vin[a])
            t = ts[rows]
            before = np.maximum.accumulate(np.concatenate(([self.newest.get(key, _NONE)], t)))
            ok = t > before[:-1]
            keep[rows] = ok
            self.newest[key] = int(before[-1])
        self.dropped += int(len(keep) - keep.sum())
        return table if keep.all() else table.filter(pa.array(keep))

    def export_state(self, vins: Iterable[str]) -> dict[str, int]:
        return {vin: self.newest[vin] for vin in vins if vin in self.newest}

    def restore_state(self, states: Mapping[str, int]) -> None:
        self.newest.update(states)

    def forget(self, vins: Iterable[str]) -> None:
        for vin in vins:
            self.newest.pop(vin, None)


def arrival_order(table: pa.Table) -> pa.Table:
    """Rows (of a decoded batch or of the archive) in the order the workers consume them: by
    Kafka partition and offset, and by time within a message."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(
        table,
        sort_keys=[
            ("kafka_partition", "ascending"),
            ("kafka_offset", "ascending"),
            ("ts", "ascending"),
        ],
    )
    return table.take(order)
