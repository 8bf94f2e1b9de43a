"""Helpers for the simulator tests: a fixed start time and column access to samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.telemetry import Sample
from simulator.fleet import Powertrain, Usage, VehicleProfile

START_MS = 1_760_000_000_000
"""2025-10-09 08:53:20 UTC, a Thursday."""


def column(samples: Sequence[Sample], path: str) -> np.ndarray:
    return np.array([s.signals[path] for s in samples])


def pick(
    fleet: Sequence[VehicleProfile], powertrain: Powertrain, usage: Usage | None = None
) -> VehicleProfile:
    return next(
        v for v in fleet if v.powertrain is powertrain and (usage is None or v.usage is usage)
    )
