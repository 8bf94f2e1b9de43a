"""Rated traction-battery figures per vehicle model, the reference for state of health.

State of health is measured against the *rated* (as-new) pack: energy in kWh for the
energy-based SoH and, where known, charge in Ah for the capacity-based one (rated energy over
the nominal pack voltage, cells in series x the cell's rated voltage). The catalog below holds
the models of the simulated fleet; a deployment adds its own models here or sets
``FLEET_BATTERY_DEFAULT_KWH`` for battery vehicles of models it does not list (they then get an
energy-based SoH only).
"""

from __future__ import annotations

from dataclasses import dataclass

from ubi.battery import RATED_CELL_V, BatterySpec


@dataclass(frozen=True)
class PackRating:
    nominal_kwh: float
    cells_series: int | None = None

    @property
    def nominal_ah(self) -> float | None:
        if not self.cells_series:
            return None
        return self.nominal_kwh * 1000.0 / (self.cells_series * RATED_CELL_V)


MODEL_RATINGS: dict[str, PackRating] = {
    "Aster": PackRating(58.0, 96),
    "Meridian": PackRating(84.0, 192),
    "E-Line": PackRating(75.0, 108),
}


def spec_for(model: str, powertrain: str, default_kwh: float | None) -> BatterySpec | None:
    """The rated pack of a registered vehicle; None for vehicles without a traction battery
    to assess (combustion, or an unknown model and no default)."""
    if powertrain.lower() not in ("bev", "phev"):
        return None
    rating = MODEL_RATINGS.get(model)
    if rating is None:
        return BatterySpec(nominal_kwh=default_kwh) if default_kwh else None
    return BatterySpec(nominal_kwh=rating.nominal_kwh, nominal_ah=rating.nominal_ah)
