"""Harsh-event detection on constructed traces, streaming == batch, and measured F1."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ubi.events import (
    ACCEL_LATERAL,
    ACCEL_LONGITUDINAL,
    GNSS_ACCURACY,
    SPEED,
    EventDetector,
    EventType,
    detect_events,
)
from ubi.traces import evaluate, generate_trace

N = 600


def _table(a_long: np.ndarray, *, speed: np.ndarray | None = None, a_lat=None) -> pa.Table:
    cols = {
        "vin": pa.array(["V1"] * N),
        "ts": pa.array(np.arange(N) * 1000, pa.timestamp("ms", tz="UTC")),
        SPEED: pa.array(speed if speed is not None else np.full(N, 60.0)),
        ACCEL_LONGITUDINAL: pa.array(a_long),
        ACCEL_LATERAL: pa.array(a_lat if a_lat is not None else np.zeros(N)),
    }
    return pa.table(cols)


def _quiet() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 0.15, N)


def test_harsh_braking_detected_with_severity() -> None:
    a = _quiet()
    a[100:103] = -3.6  # moderate
    a[300:303] = -5.5  # severe (> 1.6 x 3.1)
    events = detect_events(_table(a))
    assert [(e.type, e.start_ms, e.severity) for e in events] == [
        (EventType.HARSH_BRAKING, 100_000, 1),
        (EventType.HARSH_BRAKING, 300_000, 3),
    ]
    assert events[0].source == "accelerometer"


def test_spikes_near_misses_and_short_peaks_do_not_count() -> None:
    a = _quiet()
    a[100] = -9.0  # pot-hole: one sample
    a[200:205] = -2.6  # firm braking, below 3.1
    a[400:402] = -3.5  # only 1 s above threshold after smoothing? two samples: 1 s apart
    a[401] = -2.9
    assert detect_events(_table(a)) == []


def test_repeats_within_60s_count_once() -> None:
    a = _quiet()
    a[100:103] = -4.0
    a[140:143] = -4.0  # 40 s later: the same braking episode
    a[200:203] = -4.0  # 100 s after the first: counted
    detector = EventDetector()
    events = detector.update(_table(a)) + detector.flush()
    assert [e.start_ms for e in events] == [100_000, 200_000]
    assert detector.suppressed_repeats == 1


def test_fast_start_and_cornering() -> None:
    a, lat = _quiet(), _quiet()
    a[50:53] = 4.5
    lat[250:254] = -6.0  # right-hand bend, 0.6 g
    lat[400:404] = 3.3  # brisk but normal
    kinds = [e.type for e in detect_events(_table(a, a_lat=lat))]
    assert kinds == [EventType.HARSH_ACCELERATION, EventType.HARSH_CORNERING]


def test_speed_derivative_fallback_and_gnss_gate() -> None:
    speed = np.full(N, 72.0)
    speed[100:104] = [72.0, 57.6, 43.2, 28.8]  # -4 m/s^2 for 3 s
    speed[104:] = 28.8
    table = _table(np.full(N, np.nan), speed=speed).drop_columns([ACCEL_LATERAL])
    events = detect_events(table)
    assert [(e.type, e.source) for e in events] == [(EventType.HARSH_BRAKING, "speed")]
    bad_fix = np.full(N, 3.0)
    bad_fix[95:110] = 80.0  # GNSS dropout: the jump is not trusted
    gated = table.append_column(GNSS_ACCURACY, pa.array(bad_fix))
    assert detect_events(gated) == []


def test_standstill_bump_is_not_an_event() -> None:
    a = _quiet()
    a[100:103] = -4.0
    assert detect_events(_table(a, speed=np.zeros(N))) == []


TRACES = pa.concat_tables([generate_trace(seed, duration_s=400).table for seed in (900, 901, 902)])
BATCH_EVENTS = detect_events(TRACES)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, TRACES.num_rows), max_size=15))
def test_streaming_equals_batch_for_any_split(cuts: list[int]) -> None:
    edges = [0, *sorted(cuts), TRACES.num_rows]
    detector = EventDetector()
    streamed = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        streamed.extend(detector.update(TRACES.slice(lo, hi - lo)))
    streamed.extend(detector.flush())
    assert sorted(streamed, key=lambda e: (e.vin, e.start_ms, e.type)) == BATCH_EVENTS
    assert len(BATCH_EVENTS) >= 5


@pytest.mark.parametrize("seed", [101, 202])  # tuned on seeds 1-3; these are held out
def test_f1_on_held_out_traces_beats_naive(seed: int) -> None:
    result = evaluate(seed, 25)
    for kind in EventType:
        ours = result["ours"][kind.value]["f1"]
        assert ours >= 0.95, (kind, result["ours"][kind.value])
        assert ours > result["naive"][kind.value]["f1"], kind
