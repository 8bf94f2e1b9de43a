"""Running a fleet: in wall-clock time to a publisher (``run_simulation``), or as a pure,
deterministic generator for batch and training use (``iter_messages``/``iter_deliveries``).

Both produce exactly the same messages for the same fleet, seed, start time and span of
simulated time: ``run_simulation(duration_s=D, speedup=S)`` covers ``D * S`` simulated
seconds from ``start_ms``.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.telemetry import TelemetryMessage
from simulator.delivery import Delivery, DeliveryKind, MalformedKind, SimConfig, VehicleStream
from simulator.fleet import VehicleProfile
from simulator.labels import FaultLabel, fault_labels, write_labels
from simulator.publishers import Publisher, PublisherStats


@dataclass
class SimulationProgress:
    wall_s: float
    sim_ms: int
    """Simulated time now (epoch ms)."""
    messages_sent: int
    samples_sent: int
    publisher: PublisherStats


@dataclass
class SimulationResult:
    start_ms: int
    end_ms: int
    """Simulated time at which the run stopped (epoch ms)."""
    wall_s: float
    messages_sent: int = 0
    """Every message handed to the publisher (duplicates, late and malformed included)."""
    samples_sent: int = 0
    """Samples in valid messages, each counted once (normal and late, not re-sends)."""
    duplicates_sent: int = 0
    late_sent: int = 0
    malformed_sent: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)
    """Highest ``seq`` handed to the publisher per VIN (start the next run after it)."""
    malformed: dict[str, MalformedKind] = field(default_factory=dict)
    """``message_id`` of every malformed message and its defect."""
    published_ok: int = 0
    """``publish`` calls that returned True."""
    publisher: PublisherStats = field(default_factory=PublisherStats)
    labels: list[FaultLabel] = field(default_factory=list)

    def write_labels(self, path: str | Path) -> Path:
        """Write the fault labels of this run (``.jsonl`` or ``.parquet``)."""
        return write_labels(path, self.labels)

    def record(self, delivery: Delivery, ok: bool) -> None:
        message = delivery.message
        self.messages_sent += 1
        self.published_ok += ok
        if delivery.kind is DeliveryKind.DUPLICATE:
            self.duplicates_sent += 1
        elif delivery.kind is DeliveryKind.MALFORMED:
            self.malformed_sent += 1
            self.malformed[message.message_id] = delivery.reason or MalformedKind.UNKNOWN_SIGNAL
        else:
            self.samples_sent += len(message.samples)
            self.late_sent += delivery.kind is DeliveryKind.LATE
        if message.seq > self.last_seq.get(message.vin, -1):
            self.last_seq[message.vin] = message.seq


def _streams(
    fleet: Sequence[VehicleProfile],
    start_ms: int,
    seed: int,
    config: SimConfig | None,
    start_seq: Mapping[str, int] | None,
) -> list[VehicleStream]:
    vins = [v.vin for v in fleet]
    if len(set(vins)) != len(vins):
        raise ValueError("the fleet has duplicate VINs")
    return [
        VehicleStream(
            profile,
            start_ms=start_ms,
            config=config,
            run_seed=seed,
            first_seq=(start_seq or {}).get(profile.vin, 0),
        )
        for profile in fleet
    ]


def iter_deliveries(
    fleet: Sequence[VehicleProfile],
    start_ms: int,
    duration_s_simulated: float,
    *,
    seed: int = 0,
    config: SimConfig | None = None,
    start_seq: Mapping[str, int] | None = None,
) -> Iterator[Delivery]:
    """Every transmission of every vehicle from ``start_ms`` until ``start_ms + duration``
    (a message sent after the end is not generated; vehicles offline at the end send their
    backlog at the end), ordered by transmission time (ties by fleet order), with its kind
    (normal, duplicate, late, malformed). No I/O; deterministic."""
    end_ms = int(start_ms + duration_s_simulated * 1000)
    streams = _streams(fleet, start_ms, seed, config, start_seq)

    def one(index: int, stream: VehicleStream) -> Iterator[tuple[int, int, int, Delivery]]:
        n = 0
        while (deliveries := stream.step(end_ms)) is not None:
            for d in deliveries:
                yield d.at_ms, index, n, d
                n += 1
        for d in stream.flush(end_ms):
            yield d.at_ms, index, n, d
            n += 1

    for *_, delivery in heapq.merge(*(one(i, s) for i, s in enumerate(streams))):
        yield delivery


def iter_messages(
    fleet: Sequence[VehicleProfile],
    start_ms: int,
    duration_s_simulated: float,
    *,
    seed: int = 0,
    config: SimConfig | None = None,
    start_seq: Mapping[str, int] | None = None,
) -> Iterator[TelemetryMessage]:
    """The messages of :func:`iter_deliveries`, as they would be sent."""
    for delivery in iter_deliveries(
        fleet, start_ms, duration_s_simulated, seed=seed, config=config, start_seq=start_seq
    ):
        yield delivery.message


async def run_simulation(
    fleet: Sequence[VehicleProfile],
    publisher: Publisher,
    *,
    duration_s: float,
    speedup: float = 1.0,
    seed: int = 0,
    progress: Callable[[SimulationProgress], None] | None = None,
    config: SimConfig | None = None,
    start_ms: int | None = None,
    start_seq: Mapping[str, int] | None = None,
    progress_interval_s: float = 1.0,
) -> SimulationResult:
    """Drive every vehicle concurrently (one task each) for ``duration_s`` of wall-clock time,
    simulated time running ``speedup`` times faster, and hand each message to ``publisher``
    when it is due (a message is due at its ``sent_at`` in simulated time).

    ``start_ms`` defaults to ``now - duration_s * (speedup - 1)`` so that simulated time
    reaches the present when the run ends and never runs ahead of the wall clock (ingest
    refuses samples from the future). At ``speedup=1`` that is now. A vehicle that falls
    behind (slow publisher, CPU) sends without pausing until it catches up; whatever is not
    due by the end is not sent, except the backlog of vehicles that are offline at the end,
    which is flushed. ``publish`` starts the publisher if needed; stopping it is the
    caller's (``async with publisher: ...``).
    """
    if duration_s <= 0 or speedup <= 0:
        raise ValueError("duration_s and speedup must be > 0")
    loop = asyncio.get_running_loop()
    now_ms = int(time.time() * 1000)
    if start_ms is None:
        start_ms = now_ms - int(duration_s * max(0.0, speedup - 1.0) * 1000)
    end_ms = start_ms + int(duration_s * speedup * 1000)
    streams = _streams(fleet, start_ms, seed, config, start_seq)
    wall0 = loop.time()
    deadline = wall0 + duration_s
    result = SimulationResult(
        start_ms=start_ms, end_ms=start_ms, wall_s=0.0, labels=fault_labels(fleet, start_ms)
    )

    def sim_now() -> int:
        return min(end_ms, start_ms + int((loop.time() - wall0) * speedup * 1000))

    async def deliver(deliveries: list[Delivery]) -> None:
        for d in deliveries:
            result.record(d, await publisher.publish(d.message))

    async def drive(stream: VehicleStream) -> None:
        while loop.time() < deadline:
            deliveries = stream.step(end_ms)
            if deliveries is None:
                break
            if not deliveries:  # offline: the message went to the backlog
                await asyncio.sleep(0)
                continue
            due = wall0 + (deliveries[0].at_ms - start_ms) / 1000.0 / speedup
            wait = min(due, deadline) - loop.time()
            # Behind schedule: no pause, but still let the other vehicles run.
            await asyncio.sleep(max(0.0, wait))
            await deliver(deliveries)
        # The run lasts ``duration_s``; a vehicle still offline sends its backlog at the end.
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        await deliver(stream.flush(max(sim_now(), stream.last_ts or start_ms)))

    def report() -> None:
        if progress is not None:
            progress(
                SimulationProgress(
                    wall_s=loop.time() - wall0,
                    sim_ms=sim_now(),
                    messages_sent=result.messages_sent,
                    samples_sent=result.samples_sent,
                    publisher=publisher.stats.snapshot(),
                )
            )

    async def reporter() -> None:
        while True:
            await asyncio.sleep(progress_interval_s)
            report()

    reporter_task = asyncio.create_task(reporter()) if progress is not None else None
    try:
        await asyncio.gather(*(drive(s) for s in streams))
    finally:
        if reporter_task is not None:
            reporter_task.cancel()
    result.wall_s = loop.time() - wall0
    result.end_ms = sim_now()
    result.publisher = publisher.stats.snapshot()
    report()
    return result
