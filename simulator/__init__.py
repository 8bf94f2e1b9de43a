"""Virtual vehicles: the source of all test, demo and training telemetry.

    fleet = make_fleet(100, seed=1, bev_share=0.5, faults=0.2)    # list[VehicleProfile]
    cfg = SimConfig(sample_interval_s=1.0, samples_per_message=10,
                    delivery=DeliveryConfig(duplicate_rate=0.01, late_rate=0.001))
    async with HttpPublisher(url, tokens, gzip=True) as pub:  # KafkaPublisher, ListPublisher
        result = await run_simulation(fleet, pub, duration_s=60, speedup=1.0, seed=1, config=cfg)
    msgs = iter_messages(fleet, start_ms, 7 * 86400, seed=1)       # pure, deterministic, no I/O
    write_labels("labels.parquet", fault_labels(fleet, start_ms))  # ground truth of the faults
Profiles are frozen dataclasses (VIN, model, year, region, time zone, ECUs) for the registry;
signal paths are in ``simulator.vss``; ``iter_deliveries`` also says which messages are
duplicates, late or malformed; ``result.labels`` holds the labels of a ``run_simulation``.
"""

from simulator.delivery import (
    Delivery,
    DeliveryConfig,
    DeliveryKind,
    MalformedKind,
    SimConfig,
    VehicleStream,
)
from simulator.faults import FaultKind, FaultSpec
from simulator.fleet import Ecu, Powertrain, Usage, VehicleProfile, make_fleet, with_faults
from simulator.labels import FaultLabel, fault_labels, read_labels, write_labels
from simulator.publishers import (
    HttpPublisher,
    KafkaPublisher,
    ListPublisher,
    Publisher,
    PublisherStats,
)
from simulator.runner import (
    SimulationProgress,
    SimulationResult,
    iter_deliveries,
    iter_messages,
    run_simulation,
)
from simulator.vehicle import VehicleSim

__all__ = [
    "Delivery",
    "DeliveryConfig",
    "DeliveryKind",
    "Ecu",
    "FaultKind",
    "FaultLabel",
    "FaultSpec",
    "HttpPublisher",
    "KafkaPublisher",
    "ListPublisher",
    "MalformedKind",
    "Powertrain",
    "Publisher",
    "PublisherStats",
    "SimConfig",
    "SimulationProgress",
    "SimulationResult",
    "Usage",
    "VehicleProfile",
    "VehicleSim",
    "VehicleStream",
    "fault_labels",
    "iter_deliveries",
    "iter_messages",
    "make_fleet",
    "read_labels",
    "run_simulation",
    "with_faults",
    "write_labels",
]
