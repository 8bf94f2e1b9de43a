"""Messages, the telemetry contract and the delivery imperfections."""

from __future__ import annotations

from collections import Counter, defaultdict

import msgspec
import pytest

from core.telemetry import SCHEMA_VERSION, TelemetryMessage, decode, encode
from simulator import vss
from simulator.delivery import (
    OUT_OF_RANGE_LATITUDE,
    UNKNOWN_SIGNAL,
    DeliveryConfig,
    DeliveryKind,
    MalformedKind,
    SimConfig,
)
from simulator.fleet import VehicleProfile, make_fleet
from simulator.runner import iter_deliveries, iter_messages
from tests.simulator.support import START_MS

HOURS = 2


@pytest.fixture(scope="module")
def small_fleet() -> list[VehicleProfile]:
    return make_fleet(4, seed=21, bev_share=0.5, commercial_share=0.5)


def _samples_by_vin(deliveries) -> dict[str, list]:  # noqa: ANN001
    out: dict[str, list] = defaultdict(list)
    for d in deliveries:
        if d.kind in (DeliveryKind.NORMAL, DeliveryKind.LATE):
            out[d.message.vin].extend(d.message.samples)
    return {vin: sorted(samples, key=lambda s: s.ts) for vin, samples in out.items()}


def test_messages_follow_the_contract(small_fleet: list[VehicleProfile]) -> None:
    messages = list(iter_messages(small_fleet, START_MS, HOURS * 3600, seed=1))
    per_vin = Counter(m.vin for m in messages)
    assert set(per_vin) == {v.vin for v in small_fleet}
    assert all(n == HOURS * 360 for n in per_vin.values()), "10 x 1 s samples per message"
    last: dict[str, int] = {}
    ids: set[tuple[str, str]] = set()
    for m in messages:
        assert isinstance(m, TelemetryMessage) and m.v == SCHEMA_VERSION
        assert len(m.samples) == 10
        ts = [s.ts for s in m.samples]
        assert ts == sorted(ts) and all(b - a == 1000 for a, b in zip(ts, ts[1:], strict=False))
        assert ts[0] >= START_MS and ts[-1] < START_MS + HOURS * 3_600_000
        assert m.sent_at is not None and 0 < m.sent_at - ts[-1] < 1000
        assert m.seq == last.get(m.vin, -1) + 1, "seq counts up from 0 without gaps"
        last[m.vin] = m.seq
        assert (m.vin, m.message_id) not in ids
        ids.add((m.vin, m.message_id))
        raw = encode(m)
        assert decode(raw) == m
        assert (
            msgspec.json.decode(raw)["samples"][0]["signals"][vss.SPEED]
            == m.samples[0].signals[vss.SPEED]
        )
    sent = [m.sent_at or 0 for m in messages]
    assert sent == sorted(sent), "iter_messages yields in transmission order"


def test_deterministic_and_ids_change_with_the_start(small_fleet: list[VehicleProfile]) -> None:
    a = list(iter_messages(small_fleet, START_MS, 600, seed=3))
    b = list(iter_messages(small_fleet, START_MS, 600, seed=3))
    assert a == b
    later = list(iter_messages(small_fleet, START_MS + 3_600_000, 600, seed=3))
    assert {m.message_id for m in a}.isdisjoint({m.message_id for m in later})


def test_imperfections_are_off_by_default(small_fleet: list[VehicleProfile]) -> None:
    kinds = {d.kind for d in iter_deliveries(small_fleet, START_MS, 3600, seed=1)}
    assert kinds == {DeliveryKind.NORMAL}


CONFIG = SimConfig(
    delivery=DeliveryConfig(
        duplicate_rate=0.1, late_rate=0.2, outage_s=(60.0, 120.0), malformed_rate=0.05
    )
)


@pytest.fixture(scope="module")
def imperfect(small_fleet: list[VehicleProfile]) -> list:
    return list(iter_deliveries(small_fleet, START_MS, HOURS * 3600, seed=1, config=CONFIG))


def test_imperfections_do_not_change_the_data(
    small_fleet: list[VehicleProfile], imperfect: list
) -> None:
    clean = list(iter_deliveries(small_fleet, START_MS, HOURS * 3600, seed=1))
    assert _samples_by_vin(imperfect) == _samples_by_vin(clean)
    again = list(iter_deliveries(small_fleet, START_MS, HOURS * 3600, seed=1, config=CONFIG))
    assert again == imperfect, "imperfections are deterministic for the seed"


def test_every_generated_message_is_delivered_once_without_seq_gaps(imperfect: list) -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for d in imperfect:
        if d.kind is not DeliveryKind.DUPLICATE:
            seqs[d.message.vin].append(d.message.seq)
    for got in seqs.values():
        assert sorted(got) == list(range(len(got)))
    at = [d.at_ms for d in imperfect]
    assert at == sorted(at)


def test_duplicates(imperfect: list) -> None:
    originals: dict[tuple[str, str], TelemetryMessage] = {}
    dups = 0
    for d in imperfect:
        key = (d.message.vin, d.message.message_id)
        if d.kind is DeliveryKind.DUPLICATE:
            dups += 1
            assert originals[key] == d.message, "re-sent unchanged, after the original"
            assert d.at_ms >= d.message.sent_at
        else:
            assert key not in originals
            originals[key] = d.message
    valid = sum(d.kind in (DeliveryKind.NORMAL, DeliveryKind.LATE) for d in imperfect)
    assert 0.06 * valid < dups < 0.14 * valid


def test_late_data_is_store_and_forward(imperfect: list) -> None:
    late = [d for d in imperfect if d.kind is DeliveryKind.LATE]
    normal = [d for d in imperfect if d.kind is DeliveryKind.NORMAL]
    share = len(late) / (len(late) + len(normal))
    assert 0.12 < share < 0.28
    delays = [d.message.sent_at - d.message.samples[-1].ts for d in late]
    # At least one message (10 s) late, except a backlog flushed at the very end of the run.
    assert min(delays) > 0 and sorted(delays)[1] >= 10_000 and max(delays) >= 60_000
    assert max(d.message.sent_at - d.message.samples[-1].ts for d in normal) < 1000
    # Bursts: several late messages go out at the same instant, oldest first.
    bursts: dict[tuple[str, int], list[int]] = defaultdict(list)
    for d in late:
        assert d.at_ms == d.message.sent_at
        bursts[(d.message.vin, d.at_ms)].append(d.message.seq)
    assert max(len(b) for b in bursts.values()) >= 5
    assert all(b == sorted(b) for b in bursts.values())


def test_malformed_records_are_flagged(imperfect: list) -> None:
    bad = [d for d in imperfect if d.kind is DeliveryKind.MALFORMED]
    valid = [d for d in imperfect if d.kind is DeliveryKind.NORMAL]
    assert 0.02 * len(valid) < len(bad) < 0.09 * len(valid)
    assert {d.reason for d in bad} == set(MalformedKind)
    for d in bad:
        (sample,) = d.message.samples
        signals = sample.signals
        match d.reason:
            case MalformedKind.UNKNOWN_SIGNAL:
                assert UNKNOWN_SIGNAL in signals
            case MalformedKind.OUT_OF_RANGE:
                assert signals[vss.LATITUDE] == OUT_OF_RANGE_LATITUDE
            case MalformedKind.WRONG_TYPE:
                assert isinstance(signals[vss.SPEED], str)
        assert decode(encode(d.message)) == d.message, "malformed in content, not in JSON"
    good_ids = {d.message.message_id for d in valid}
    assert good_ids.isdisjoint(d.message.message_id for d in bad)


def test_the_ingest_validator_agrees(imperfect: list) -> None:
    """Valid messages pass the real ingest validation; malformed ones fail it as flagged."""
    validation = pytest.importorskip("ingestion.validation")
    signals = pytest.importorskip("core.signals")
    validator = validation.Validator(signals.CATALOG)
    now = START_MS + HOURS * 3_600_000
    expected_error = {
        MalformedKind.UNKNOWN_SIGNAL: "unknown_signal",
        MalformedKind.OUT_OF_RANGE: "out_of_range",
        MalformedKind.WRONG_TYPE: "wrong_type",
    }
    for d in imperfect:
        errors = validator.validate(d.message, now)
        if d.kind is DeliveryKind.MALFORMED:
            assert [e.type for e in errors] == [expected_error[d.reason]]
        else:
            assert errors == [], errors
