"""Service outcomes as training labels for predictive maintenance: closing the loop.

Every part a center replaced (``service_outcome``) becomes one label row in the format of
``simulator.labels`` that ``fleet pdm train --labels`` reads: ``component`` is the part's
label component (``engine.coolant_pump``, ``brake_pad.row1.left`` ...), ``failure_ts`` the
completion time (the part reached the end of its life there: it was replaced), ``onset_ts``
when the platform first saw the issue, ``fault_type`` ``service_outcome``, ``dtcs`` the codes
the center cleared. Parts that map to no predicted component are exported too; training
ignores them (``diagnostics.pdm_components.component_of_label``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.models import ServiceOutcome

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


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def label_rows(outcomes: Sequence[ServiceOutcome]) -> list[dict[str, Any]]:
    return [
        {
            "vin": o.vin,
            "component": o.part,
            "fault_type": "service_outcome",
            "onset_ts": min(_ms(o.found_at), _ms(o.completed_at)),
            "failure_ts": _ms(o.completed_at),
            "signal": "",
            "dtcs": list(o.codes_cleared),
        }
        for o in outcomes
    ]


def write_labels(path: str | Path, outcomes: Sequence[ServiceOutcome]) -> int:
    """Write the outcomes as labels (``.parquet`` or ``.jsonl``); returns the row count."""
    path = Path(path)
    rows = label_rows(outcomes)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows, schema=LABEL_SCHEMA), path)
    elif path.suffix in (".jsonl", ".json"):
        import orjson

        with path.open("wb") as out:
            for row in rows:
                out.write(orjson.dumps(row) + b"\n")
    else:
        raise ValueError(f"labels go to .parquet or .jsonl, not {path.suffix!r}")
    return len(rows)
