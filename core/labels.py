"""Label files: the ground truth predictive-maintenance training reads (``fleet pdm train
--labels``). Two producers write them: the simulator (the faults it injected) and proactive
service (the parts centers replaced). One row per failed component:

``vin``, ``component`` (``engine.coolant_pump``, ``brake_pad.row1.left``, ...), ``fault_type``,
``onset_ts`` and ``failure_ts`` (epoch ms), ``signal`` (the signal carrying the signature, or
empty) and ``dtcs`` (codes). JSON Lines (``.jsonl``) or Parquet (``.parquet``), chosen by the
file suffix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

LABEL_SCHEMA = pa.schema(
    [
        ("vin", pa.string()),
        ("component", pa.string()),
        ("fault_type", pa.string()),
        ("onset_ts", pa.int64()),
        ("failure_ts", pa.int64()),
        ("signal", pa.string()),
        ("dtcs", pa.list_(pa.string())),
    ]
)
SUFFIXES = (".parquet", ".jsonl", ".json")


def write_label_rows(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write label rows (dicts with the schema's fields); returns how many."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"labels go to .parquet or .jsonl, not {path.suffix!r}")
    rows = [dict(row) | {"dtcs": list(row["dtcs"])} for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows, schema=LABEL_SCHEMA), path)
    else:
        with path.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
    return len(rows)


def read_label_rows(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
    with path.open(encoding="utf-8") as src:
        return [json.loads(line) for line in src if line.strip()]
