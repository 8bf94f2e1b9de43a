"""The components predictive maintenance covers, and how ground-truth labels map onto them.

One LightGBM model per (component, horizon). A component applies to a vehicle only when the
telemetry that would show its wear is there (``requires``: a coolant pump needs a running
combustion engine, a traction battery needs cell voltages); elsewhere it is neither trained on
nor scored. ``rule_feature`` is the one signal a hand-written rule would threshold, the
heuristic baseline every evaluation reports next to the model.
"""

from __future__ import annotations

from dataclasses import dataclass

HORIZONS_DAYS: tuple[int, ...] = (7, 30)


@dataclass(frozen=True)
class Component:
    name: str
    title: str
    label_prefixes: tuple[str, ...]
    """Ground-truth label components (``simulator.labels.FaultLabel.component``) that are this
    component, matched by prefix (``tire.row1.left`` is a ``tires`` failure)."""
    requires: str
    """A feature that must be present (not NaN) for the component to apply."""
    rule_feature: str
    rule_sign: float
    """+1: a higher ``rule_feature`` means more risk; -1: a lower one does."""


COMPONENTS: tuple[Component, ...] = (
    Component("lv_battery", "12 V battery", ("low_voltage_battery",), "lv_rest_v_mean_7d",
              "lv_rest_v_min_24h", -1.0),
    Component("brake_pads", "brake pads", ("brake_pad",), "pad_wear_max_pct",
              "pad_wear_max_pct", +1.0),
    Component("coolant_pump", "coolant pump", ("engine.coolant_pump",), "coolant_run_max_7d",
              "coolant_run_max_24h", +1.0),
    Component("tires", "tires", ("tire",), "tire_vs_baseline_min_pct_7d",
              "tire_vs_baseline_min_pct_24h", -1.0),
    Component("traction_battery", "traction battery", ("traction_battery",),
              "cell_spread_mv_mean_7d", "cell_spread_mv_max_24h", +1.0),
)  # fmt: skip
COMPONENT_NAMES: tuple[str, ...] = tuple(c.name for c in COMPONENTS)
BY_NAME: dict[str, Component] = {c.name: c for c in COMPONENTS}


def component_of_label(label_component: str) -> str | None:
    """The product component of a ground-truth label component, or None if not covered."""
    for component in COMPONENTS:
        for prefix in component.label_prefixes:
            if label_component == prefix or label_component.startswith(prefix + "."):
                return component.name
    return None
