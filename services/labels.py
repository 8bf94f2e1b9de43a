"""Service outcomes as training labels for predictive maintenance: closing the loop.

Every part a center replaced (``service_outcome``) becomes one label row in the format of
``core.labels`` (the simulator's too) that ``fleet pdm train --labels`` reads:

* ``component``: the part's label component (``engine.coolant_pump``, ``brake_pad.row1.left``);
* ``failure_ts``: the completion time (the part reached the end of its life: it was replaced);
* ``onset_ts``: when the platform first saw the issue;
* ``fault_type``: ``service_outcome``; ``dtcs``: the codes the center cleared.

Parts that map to no predicted component are exported too; training ignores them
(``diagnostics.pdm_components.component_of_label``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from core.labels import write_label_rows
from services.models import ServiceOutcome


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
    return write_label_rows(path, label_rows(outcomes))
