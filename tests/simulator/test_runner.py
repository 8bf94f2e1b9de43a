"""run_simulation: the ListPublisher path, pacing, progress, counts and sequence resumption."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from core.telemetry import TelemetryMessage
from simulator.delivery import DeliveryConfig, DeliveryKind, SimConfig
from simulator.faults import FaultKind, FaultSpec
from simulator.fleet import VehicleProfile, make_fleet
from simulator.labels import read_labels
from simulator.publishers import ListPublisher, PublisherStats
from simulator.runner import SimulationProgress, iter_deliveries, run_simulation
from tests.simulator.support import START_MS


@pytest.fixture(scope="module")
def small_fleet() -> list[VehicleProfile]:
    leak = FaultSpec(FaultKind.TIRE_LEAK, 60.0, 600.0, wheel="Row1.Wheel.Left")
    return make_fleet(4, seed=31, commercial_share=0.5, faults={1: [leak]})


def _by_vin(messages: list[TelemetryMessage]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for m in messages:
        out[m.vin].append(m.message_id)
    return dict(out)


async def test_fast_run_publishes_exactly_what_iter_deliveries_yields(
    small_fleet: list[VehicleProfile], tmp_path: Path
) -> None:
    config = SimConfig(
        delivery=DeliveryConfig(duplicate_rate=0.05, late_rate=0.1, outage_s=(60, 120),
                                malformed_rate=0.03)
    )  # fmt: skip
    publisher = ListPublisher()
    seen: list[SimulationProgress] = []
    async with publisher:
        result = await run_simulation(
            small_fleet, publisher, duration_s=2.0, speedup=900.0, seed=5, config=config,
            start_ms=START_MS, progress=seen.append, progress_interval_s=0.5,
        )  # fmt: skip
    expected = list(iter_deliveries(small_fleet, START_MS, 1800, seed=5, config=config))
    assert _by_vin(publisher.messages) == _by_vin([d.message for d in expected])
    kinds = [d.kind for d in expected]
    assert result.messages_sent == len(expected) == publisher.stats.sent
    assert result.duplicates_sent == kinds.count(DeliveryKind.DUPLICATE) > 0
    assert result.late_sent == kinds.count(DeliveryKind.LATE) > 0
    assert result.malformed_sent == kinds.count(DeliveryKind.MALFORMED) > 0
    assert result.malformed == {
        d.message.message_id: d.reason for d in expected if d.kind is DeliveryKind.MALFORMED
    }
    assert result.samples_sent == sum(
        len(d.message.samples)
        for d in expected
        if d.kind in (DeliveryKind.NORMAL, DeliveryKind.LATE)
    )
    assert result.published_ok == result.messages_sent
    assert result.last_seq == {
        vin: max(m.seq for m in publisher.messages if m.vin == vin)
        for vin in {v.vin for v in small_fleet}
    }
    assert result.start_ms == START_MS and result.end_ms == START_MS + 1_800_000
    assert 1.9 < result.wall_s < 4.0
    assert [label.vin for label in result.labels] == [small_fleet[1].vin]
    assert result.labels[0].onset_ts == START_MS + 60_000
    assert read_labels(result.write_labels(tmp_path / "labels.jsonl")) == result.labels
    assert isinstance(result.publisher, PublisherStats) and result.publisher.accepted > 0
    assert len(seen) >= 3 and seen[-1].messages_sent == result.messages_sent
    assert [p.messages_sent for p in seen] == sorted(p.messages_sent for p in seen)


class _ClockedPublisher(ListPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.wall_ms: list[int] = []

    async def publish(self, message: TelemetryMessage) -> bool:
        self.wall_ms.append(int(time.time() * 1000))
        return await super().publish(message)


async def test_real_time_pacing_starts_now_and_never_sends_early(
    small_fleet: list[VehicleProfile],
) -> None:
    config = SimConfig(sample_interval_s=0.1, samples_per_message=5)  # a message every 0.5 s
    publisher = _ClockedPublisher()
    before = int(time.time() * 1000)
    result = await run_simulation(
        small_fleet, publisher, duration_s=2.0, speedup=1.0, config=config
    )
    after = int(time.time() * 1000)
    assert before <= result.start_ms <= before + 200
    assert 1.9 < result.wall_s < 3.0 and result.end_ms <= after
    per_vin: dict[str, int] = defaultdict(int)
    for message, sent_wall in zip(publisher.messages, publisher.wall_ms, strict=True):
        per_vin[message.vin] += 1
        assert message.sent_at is not None
        assert sent_wall >= message.sent_at - 20, "not before it is due"
        assert sent_wall <= message.sent_at + 500, "and not much later"
        assert message.samples[-1].ts <= sent_wall
    assert all(3 <= n <= 4 for n in per_vin.values()), per_vin
    assert len(per_vin) == len(small_fleet)


async def test_speedup_defaults_the_start_so_simulated_time_ends_now(
    small_fleet: list[VehicleProfile],
) -> None:
    publisher = ListPublisher()
    now = int(time.time() * 1000)
    result = await run_simulation(small_fleet[:2], publisher, duration_s=1.0, speedup=600.0)
    assert result.start_ms == pytest.approx(now - 599_000, abs=500)
    assert max(s.ts for m in publisher.messages for s in m.samples) <= int(time.time() * 1000)


async def test_start_seq_resumes_the_sequence(small_fleet: list[VehicleProfile]) -> None:
    first = ListPublisher()
    r1 = await run_simulation(small_fleet, first, duration_s=0.5, speedup=600.0,
                              start_ms=START_MS)  # fmt: skip
    second = ListPublisher()
    r2 = await run_simulation(
        small_fleet, second, duration_s=0.5, speedup=600.0, start_ms=START_MS + 300_000,
        start_seq={vin: seq + 1 for vin, seq in r1.last_seq.items()},
    )  # fmt: skip
    for vin, last in r1.last_seq.items():
        seqs = [m.seq for m in second.messages if m.vin == vin]
        assert seqs[0] == last + 1 and seqs == sorted(seqs)
        assert r2.last_seq[vin] == seqs[-1]
    ids1 = {m.message_id for m in first.messages}
    assert ids1.isdisjoint(m.message_id for m in second.messages)


async def test_a_slow_publisher_does_not_overrun_the_deadline(
    small_fleet: list[VehicleProfile],
) -> None:
    class Slow(ListPublisher):
        async def publish(self, message: TelemetryMessage) -> bool:
            await asyncio.sleep(0.05)
            return await super().publish(message)

    publisher = Slow()
    result = await run_simulation(small_fleet, publisher, duration_s=1.0, speedup=10_000.0,
                                  start_ms=START_MS)  # fmt: skip
    assert result.wall_s < 1.5
    assert 0 < result.messages_sent < 4 * 1000


async def test_rejects_bad_arguments(small_fleet: list[VehicleProfile]) -> None:
    with pytest.raises(ValueError):
        await run_simulation(small_fleet, ListPublisher(), duration_s=0, speedup=1.0)
    with pytest.raises(ValueError, match="duplicate VINs"):
        await run_simulation([small_fleet[0]] * 2, ListPublisher(), duration_s=1, speedup=1.0)
