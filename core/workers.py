"""One registry of workers: name -> topics, consumer group, dead-letter topic and the handler
factory (imported lazily, so ``core`` does not depend on domain internals). ``fleet worker NAME``
runs any of them (after Sentry's ``KAFKA_CONSUMERS``)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from core.config import Settings
from core.runner import BatchHandler, KafkaRunner, RunnerStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    description: str
    topics: Callable[[Settings], list[str]]
    group_id: str
    dlq_topic: Callable[[Settings], str | None]
    factory: str  # "module:function" taking Settings and returning a BatchHandler

    def build_handler(self, settings: Settings) -> BatchHandler:
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)(settings)  # type: ignore[no-any-return]


WORKERS: dict[str, WorkerSpec] = {
    spec.name: spec
    for spec in [
        WorkerSpec(
            name="archive",
            description="validate telemetry, dead-letter bad records, write the Parquet archive",
            topics=lambda s: [s.telemetry_topic],
            group_id="fleet.archive",
            dlq_topic=lambda s: s.telemetry_dlq_topic,
            factory="ingestion.worker:build_archive_handler",
        ),
        WorkerSpec(
            name="diagnostics",
            description="DTC lifecycle and rule alarms -> diagnostics.findings.v1 and the database",
            topics=lambda s: [s.telemetry_topic],
            group_id="fleet.diagnostics",
            dlq_topic=lambda s: None,  # the archive worker dead-letters invalid records
            factory="diagnostics.worker:build_diagnostics_handler",
        ),
        WorkerSpec(
            name="pdm",
            description="failure-risk predictions (LightGBM) -> maintenance.predictions.v1, DB",
            topics=lambda s: [s.telemetry_topic],
            group_id="fleet.pdm",
            dlq_topic=lambda s: None,  # the archive worker dead-letters invalid records
            factory="diagnostics.pdm_worker:build_pdm_handler",
        ),
        WorkerSpec(
            name="ubi",
            description="trips, harsh driving events and UBI scores -> the database",
            topics=lambda s: [s.telemetry_topic],
            group_id="fleet.ubi",
            dlq_topic=lambda s: None,  # the archive worker dead-letters invalid records
            factory="ubi.worker:build_ubi_handler",
        ),
        WorkerSpec(
            name="battery",
            description="charge sessions, battery state of health, residual score -> database",
            topics=lambda s: [s.telemetry_topic],
            group_id="fleet.battery",
            dlq_topic=lambda s: None,  # the archive worker dead-letters invalid records
            factory="ubi.worker:build_battery_handler",
        ),
        WorkerSpec(
            name="services",
            description="findings and predictions -> maintenance bookings, webhook outbox",
            topics=lambda s: [s.findings_topic, s.predictions_topic],
            group_id="fleet.services",
            dlq_topic=lambda s: s.services_dlq_topic,
            factory="services.worker:build_services_handler",
        ),
        WorkerSpec(
            name="ota",
            description="install reports -> records and campaign gates; re-signs metadata",
            topics=lambda s: [s.ota_reports_topic],
            group_id="fleet.ota",
            dlq_topic=lambda s: s.ota_dlq_topic,
            factory="ota.worker:build_ota_handler",
        ),
    ]
}


def get_worker(name: str) -> WorkerSpec:
    try:
        return WORKERS[name]
    except KeyError:
        known = ", ".join(sorted(WORKERS))
        raise KeyError(f"unknown worker {name!r}; known workers: {known}") from None


def build_runner(settings: Settings, name: str, *, group_id: str | None = None) -> KafkaRunner:
    spec = get_worker(name)
    return KafkaRunner(
        settings,
        name=name,
        topics=spec.topics(settings),
        group_id=group_id or spec.group_id,
        handler=spec.build_handler(settings),
        dlq_topic=spec.dlq_topic(settings),
        stats_path=settings.data_dir / "run" / f"worker-{name}-{os.getpid()}.json",
    )


async def run_worker(settings: Settings, name: str, *, group_id: str | None = None) -> RunnerStats:
    """Run a worker until SIGTERM/SIGINT, then drain, commit and stop."""
    runner = build_runner(settings, name, group_id=group_id)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    log.info("worker %s consuming %s as %s", name, runner.topics, runner.group_id)
    return await runner.run()
