"""DTC lifecycle per vehicle: states, episodes, freeze frames, replays and late data."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnostics.dtc import DTC_LIST_SIGNAL, DtcScope
from diagnostics.dtc_lifecycle import (
    DAY_MS,
    DtcEvent,
    DtcRecord,
    DtcState,
    DtcTracker,
    LifecyclePolicy,
)
from ingestion.archive import archive_schema

VIN = "WVWZZZ1JZ3W386752"
OTHER_VIN = "WBA3A5C55CF256985"
T0 = 1_748_938_529_000
SECOND = 1000
SPEED = "Vehicle.Speed"
COOLANT = "Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature"
LV_VOLTAGE = "Vehicle.LowVoltageBattery.CurrentVoltage"

PENDING, CONFIRMED, CLEARED, AGED_OUT = (
    DtcState.PENDING,
    DtcState.CONFIRMED,
    DtcState.CLEARED,
    DtcState.AGED_OUT,
)

Row = dict[str, Any]


def sample(
    ts: int, dtcs: list[str | None] | None, signals: dict[str, Any] | None = None, vin: str = VIN
) -> Row:
    return {"vin": vin, "ts": ts, DTC_LIST_SIGNAL: dtcs, **(signals or {})}


def table(rows: Sequence[Row]) -> pa.Table:
    """Rows in the archive's column types (missing signals are null)."""
    return pa.table(
        {
            "vin": pa.array([row["vin"] for row in rows], pa.string()),
            "ts": pa.array([row["ts"] for row in rows], pa.timestamp("ms", tz="UTC")),
            DTC_LIST_SIGNAL: pa.array(
                [row.get(DTC_LIST_SIGNAL) for row in rows], pa.list_(pa.string())
            ),
            SPEED: pa.array([row.get(SPEED) for row in rows], pa.float64()),
            COOLANT: pa.array([row.get(COOLANT) for row in rows], pa.float64()),
            LV_VOLTAGE: pa.array([row.get(LV_VOLTAGE) for row in rows], pa.float64()),
        }
    )


def every_second(start: int, seconds: int, dtcs: list[str | None] | None) -> list[Row]:
    return [sample(start + i * SECOND, dtcs) for i in range(seconds)]


def transitions(events: Sequence[DtcEvent]) -> list[tuple[str, DtcState | None, DtcState, int]]:
    return [(e.key, e.state_before, e.state_after, e.ts) for e in events]


def without_frames(events: Sequence[DtcEvent]) -> list[tuple[Any, ...]]:
    return [
        (e.vin, e.key, e.state_before, e.state_after, e.ts, e.episode, e.occurrences)
        for e in events
    ]


# --- states ---


def test_pending_then_confirmed_then_cleared() -> None:
    listed = every_second(T0, 90, ["P0217"])  # last listed at T0 + 89 s
    gone = every_second(T0 + 90 * SECOND, 400, [])
    result = DtcTracker().process(table(listed + gone))

    assert transitions(result.events) == [
        ("P0217", None, PENDING, T0),
        ("P0217", PENDING, CONFIRMED, T0 + 60 * SECOND),  # 3+ reports spanning 60 s
        ("P0217", CONFIRMED, CLEARED, T0 + (89 + 300) * SECOND),  # 5 min after last listed
    ]
    assert result.events[1].occurrences == 61
    [record] = DtcTracker().process(table(listed + gone)).updated
    assert (record.state, record.occurrences, record.first_seen, record.last_seen) == (
        CLEARED,
        90,
        T0,
        T0 + 89 * SECOND,
    )
    assert record.dtc.description is not None


def test_a_single_glitch_is_pending_and_then_cleared_without_confirming() -> None:
    rows = [sample(T0, ["P0562"]), *every_second(T0 + SECOND, 400, [])]
    result = DtcTracker().process(table(rows))
    assert transitions(result.events) == [
        ("P0562", None, PENDING, T0),
        ("P0562", PENDING, CLEARED, T0 + 300 * SECOND),
    ]


def test_confirmed_status_bit_confirms_at_once() -> None:
    result = DtcTracker().process(table([sample(T0, ["P0562:09"])]))
    assert transitions(result.events) == [("P0562", None, CONFIRMED, T0)]
    assert result.events[0].dtc.status is not None
    assert result.events[0].dtc.status.confirmed_dtc


def test_confirmed_status_bit_confirms_a_pending_dtc() -> None:
    rows = [sample(T0, ["P0562:01"]), sample(T0 + SECOND, ["P0562:09"])]
    result = DtcTracker().process(table(rows))
    assert transitions(result.events) == [
        ("P0562", None, PENDING, T0),
        ("P0562", PENDING, CONFIRMED, T0 + SECOND),
    ]
    assert result.updated[0].dtc.text == "P0562:09"  # the latest status is kept


def test_status_bit_can_be_ignored_by_policy() -> None:
    tracker = DtcTracker(LifecyclePolicy(trust_confirmed_status=False))
    result = tracker.process(table([sample(T0, ["P0562:09"])]))
    assert transitions(result.events) == [("P0562", None, PENDING, T0)]


def test_null_lists_say_nothing_and_short_absences_keep_the_episode() -> None:
    rows = [
        *every_second(T0, 70, ["P2181"]),
        *every_second(T0 + 70 * SECOND, 100, None),  # samples without the list
        *every_second(T0 + 170 * SECOND, 100, []),  # not listed for 200 s: < 5 min
        *every_second(T0 + 270 * SECOND, 10, ["P2181"]),
    ]
    result = DtcTracker().process(table(rows))
    assert transitions(result.events) == [
        ("P2181", None, PENDING, T0),
        ("P2181", PENDING, CONFIRMED, T0 + 60 * SECOND),
    ]
    [record] = result.updated
    assert (record.episode, record.occurrences, record.absent_reports) == (1, 80, 0)


def test_ages_out_when_not_listed_for_a_week() -> None:
    rows = every_second(T0, 61, ["P0AFA"])
    # The vehicle keeps sending samples, but without the DTC list, once a day.
    rows += [sample(T0 + day * DAY_MS, None, {SPEED: 10.0}) for day in range(1, 9)]
    result = DtcTracker().process(table(rows))
    last_seen = T0 + 60 * SECOND
    assert transitions(result.events)[-1] == ("P0AFA", CONFIRMED, AGED_OUT, last_seen + 7 * DAY_MS)


def test_expire_ages_out_vehicles_that_went_silent() -> None:
    tracker = DtcTracker()
    tracker.process(table(every_second(T0, 5, ["U0100"])))
    last_seen = T0 + 4 * SECOND
    assert tracker.expire(last_seen + 7 * DAY_MS - 1).events == []
    result = tracker.expire(last_seen + 30 * DAY_MS)
    assert transitions(result.events) == [("U0100", PENDING, AGED_OUT, last_seen + 7 * DAY_MS)]
    assert [record.state for record in result.updated] == [AGED_OUT]
    assert tracker.expire(last_seen + 60 * DAY_MS).events == []


def test_reappearance_opens_a_new_episode() -> None:
    tracker = DtcTracker()
    first = [*every_second(T0, 5, ["P0217"]), *every_second(T0 + 5 * SECOND, 400, [])]
    tracker.process(table(first))
    back_at = T0 + 2 * 3600 * SECOND
    result = tracker.process(table([sample(back_at, ["P0217"], {COOLANT: 121.0})]))

    [event] = result.events
    assert (event.state_before, event.state_after, event.episode, event.occurrences) == (
        CLEARED,
        PENDING,
        2,
        1,
    )
    assert event.opens_episode
    assert event.freeze_frame == {COOLANT: 121.0, DTC_LIST_SIGNAL: ["P0217"]}
    [record] = tracker.state(VIN)
    assert (record.episode, record.first_seen, record.occurrences) == (2, back_at, 1)


def test_codes_with_different_failure_types_are_separate_dtcs() -> None:
    result = DtcTracker().process(table([sample(T0, ["P0217-4B", "P0217-11:01"])]))
    assert sorted(e.key for e in result.events) == ["P0217-11", "P0217-4B"]


# --- freeze frame ---


def test_freeze_frame_holds_the_last_values_within_the_window() -> None:
    rows = [
        sample(T0 - 40 * SECOND, [], {LV_VOLTAGE: 12.6}),  # outside the 30 s window
        sample(T0 - 20 * SECOND, [], {SPEED: 80.0, COOLANT: 117.0}),
        sample(T0 - 10 * SECOND, None, {SPEED: 60.0, COOLANT: float("nan")}),
        sample(T0, ["P0217"], {COOLANT: 119.5}),
        sample(T0 + SECOND, ["P0217"], {SPEED: 0.0, COOLANT: 125.0}),  # after: not used
    ]
    tracker = DtcTracker()
    result = tracker.process(table(rows))
    expected = {SPEED: 60.0, COOLANT: 119.5, DTC_LIST_SIGNAL: ["P0217"]}
    assert result.events[0].freeze_frame == expected
    [record] = tracker.state(VIN)
    assert record.freeze_frame == expected
    orjson.dumps(result.events[0].as_dict())  # JSON-ready


def test_freeze_frame_from_the_archive_schema_has_signals_only() -> None:
    schema = archive_schema()
    base = {"message_id": "m-1", "seq": 1, "kafka_partition": 0, "kafka_offset": 7}
    rows = [
        {**base, "vin": VIN, "ts": T0 - SECOND, SPEED: 51.0, "extra_signals": "{}"},
        {
            **base,
            "vin": VIN,
            "ts": T0,
            DTC_LIST_SIGNAL: ["P0A80"],
            "Vehicle.Powertrain.TractionBattery.StateOfHealth": 61.5,
        },
    ]
    result = DtcTracker().process(pa.Table.from_pylist(rows, schema=schema))
    assert result.events[0].freeze_frame == {
        SPEED: 51.0,
        DTC_LIST_SIGNAL: ["P0A80"],
        "Vehicle.Powertrain.TractionBattery.StateOfHealth": 61.5,
    }


# --- unknown, malformed, odd input ---


def test_unknown_codes_are_tracked() -> None:
    result = DtcTracker().process(table([sample(T0, ["P1ABC"])]))
    [event] = result.events
    assert (event.key, event.dtc.known, event.dtc.scope) == ("P1ABC", False, DtcScope.MANUFACTURER)


def test_malformed_entries_are_reported_not_raised() -> None:
    rows = [sample(T0 + i * SECOND, ["P0217", "XYZ", None, "p0562"]) for i in range(3)]
    result = DtcTracker().process(table(rows))
    assert sorted(e.key for e in result.events) == ["P0217", "P0562"]
    assert {(m.text, m.reason, m.count, m.first_ts) for m in result.malformed} == {
        ("XYZ", "too_short", 3, T0),
        (None, "null", 3, T0),
    }


def test_batches_without_dtcs_or_without_the_list_column() -> None:
    tracker = DtcTracker()
    assert tracker.process(table(every_second(T0, 10, []))).events == []
    no_list = pa.table({"vin": [VIN], "ts": pa.array([T0], pa.timestamp("ms", tz="UTC"))})
    assert tracker.process(no_list).events == []
    assert tracker.process(table([]).slice(0, 0)).rows == 0


def test_row_order_and_vehicle_mix_do_not_matter() -> None:
    rows = [*every_second(T0, 80, ["P0300"]), *every_second(T0 + 80 * SECOND, 400, [])]
    rows += [{**row, "vin": OTHER_VIN, DTC_LIST_SIGNAL: ["U0121"]} for row in rows[:70]]
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    in_order = DtcTracker().process(table(rows)).events
    assert without_frames(DtcTracker().process(table(shuffled)).events) == without_frames(in_order)
    assert {e.vin for e in in_order} == {VIN, OTHER_VIN}


# --- replays, late data, restore ---


def test_replaying_a_batch_changes_nothing() -> None:
    rows = [*every_second(T0, 90, ["P0217"]), *every_second(T0 + 90 * SECOND, 30, [])]
    tracker = DtcTracker()
    tracker.process(table(rows))
    before = tracker.state(VIN)
    replay = tracker.process(table(rows))
    assert (replay.events, replay.updated, replay.evaluated_rows) == ([], [], 0)
    assert replay.stale_rows == len(rows)
    assert tracker.state(VIN) == before


def test_duplicate_samples_in_one_batch_count_once() -> None:
    rows = every_second(T0, 10, ["P0217"])
    result = DtcTracker().process(table(rows + rows))
    [record] = result.updated
    assert record.occurrences == 10
    assert result.stale_rows == 10


def test_late_rows_are_skipped_and_counted() -> None:
    tracker = DtcTracker()
    tracker.process(table(every_second(T0, 10, ["P0217"])))
    late = tracker.process(table([sample(T0 - 60 * SECOND, ["P0217", "P0300"])]))
    assert (late.events, late.updated, late.stale_rows) == ([], [], 1)


def test_restored_state_continues_exactly_and_ignores_replays() -> None:
    part1 = every_second(T0, 30, ["P0AFA"])
    part2 = [
        *every_second(T0 + 30 * SECOND, 60, ["P0AFA"]),
        *every_second(T0 + 90 * SECOND, 400, []),
    ]
    original = DtcTracker()
    original.process(table(part1))
    stored = [orjson.loads(orjson.dumps(r.as_dict())) for r in original.state(VIN)]

    restarted = DtcTracker()
    assert restarted.missing_vins(table(part1 + part2)) == [VIN]
    restarted.restore([DtcRecord.from_dict(data) for data in stored])
    assert restarted.missing_vins(table(part1 + part2)) == []
    # The restarted worker replays from its last committed offset: part 1 again, then part 2.
    resumed = restarted.process(table(part1 + part2))
    assert without_frames(resumed.events) == without_frames(original.process(table(part2)).events)
    assert restarted.state(VIN) == original.state(VIN)


def test_restore_marks_vehicles_without_records_as_loaded() -> None:
    tracker = DtcTracker()
    batch = table([sample(T0, ["P0217"])])
    tracker.restore([], vins=[VIN])
    assert tracker.missing_vins(batch) == []
    assert tracker.state(VIN) == []


REPORT_CHOICES: list[list[str | None] | None] = [
    None,
    [],
    ["P0217"],
    ["P0217", "P2181"],
    ["P2181:08"],
    ["P0AFA-16"],
    ["junk"],
]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(REPORT_CHOICES), st.integers(1, 400_000)),
        min_size=1,
        max_size=60,
    ),
    cuts=st.lists(st.integers(0, 60), max_size=5),
    replay_from=st.integers(0, 60),
)
def test_any_split_and_replay_gives_the_same_lifecycle(
    steps: list[tuple[list[str | None] | None, int]], cuts: list[int], replay_from: int
) -> None:
    """Batches of any size, with a Kafka-style replay of already-processed rows in between,
    produce the same events and state as one pass. (Freeze frames may differ: they only look
    back within a batch.)"""
    policy = LifecyclePolicy(clear_min_span_ms=60_000, age_out_ms=3_600_000)
    rows, ts = [], T0
    for report, gap in steps:
        ts += gap
        rows.append(sample(ts, report))
    reference = DtcTracker(policy)
    expected = without_frames(reference.process(table(rows)).events)

    bounds = sorted({0, len(rows), *(min(cut, len(rows)) for cut in cuts)})
    tracker, events = DtcTracker(policy), []
    for start, end in zip(bounds, bounds[1:], strict=False):
        replay = rows[min(replay_from, start) : start]  # rows already processed, sent again
        events += tracker.process(table(replay + rows[start:end])).events
    assert without_frames(events) == expected
    strip = [(r.key, r.state, r.episode, r.occurrences, r.last_report) for r in tracker.state(VIN)]
    assert strip == [
        (r.key, r.state, r.episode, r.occurrences, r.last_report) for r in reference.state(VIN)
    ]


@pytest.mark.parametrize(
    "policy",
    [
        {"confirm_min_reports": 0},
        {"clear_min_reports": 0},
        {"confirm_min_span_ms": -1},
        {"age_out_ms": 0},
    ],
)
def test_policy_rejects_nonsense(policy: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LifecyclePolicy(**policy)
