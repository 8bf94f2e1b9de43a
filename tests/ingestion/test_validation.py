"""The telemetry validator: unit tests and Hypothesis properties."""

from __future__ import annotations

import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.signals import CATALOG
from core.telemetry import Sample, TelemetryMessage, decode
from ingestion.validation import FastValidator, Limits, Validator, decode_errors
from tests.helpers import encode, message, new_vin

NOW = int(time.time() * 1000)
VALIDATOR = Validator(CATALOG, Limits())
VIN = new_vin(1)


def errors_for(payload: dict) -> list[tuple[tuple, str]]:
    return [(e.loc, e.type) for e in VALIDATOR.validate(decode(encode(payload)), NOW)]


def test_valid_message_has_no_errors() -> None:
    assert errors_for(message(VIN, ts_ms=NOW - 5000)) == []


@pytest.mark.parametrize(
    ("signals", "kind"),
    [
        ({"Vehicle.Speed": 400.0}, "out_of_range"),
        ({"Vehicle.Speed": -51}, "out_of_range"),
        ({"Vehicle.Speed": "fast"}, "wrong_type"),
        ({"Vehicle.Speed": True}, "wrong_type"),
        ({"Vehicle.TraveledDistance": 1.5}, "wrong_type"),
        ({"Vehicle.TraveledDistance": -1}, "out_of_range"),
        ({"Vehicle.LowVoltageSystemState": "IGNITION"}, "not_allowed"),
        ({"Vehicle.Diagnostics.DTCList": "P0217"}, "wrong_type"),
        ({"Vehicle.Powertrain.TractionBattery.Charging.IsCharging": 1}, "wrong_type"),
        ({"Vehicle.Made.Up": 1}, "unknown_signal"),
    ],
)
def test_bad_values_are_named(signals: dict, kind: str) -> None:
    found = errors_for(message(VIN, samples=1, ts_ms=NOW, signals=signals))
    path = next(iter(signals))
    assert found == [(("samples", 0, "signals", path), kind)]


def test_message_level_problems() -> None:
    payload = message("WVWZZZ1KZ0I000001", samples=1, ts_ms=NOW)
    payload["message_id"] = ""
    payload["seq"] = -1
    kinds = {loc[0]: kind for loc, kind in errors_for(payload)}
    assert kinds == {"vin": "invalid_vin", "message_id": "invalid_length", "seq": "out_of_range"}



@pytest.mark.parametrize("seq", [-1, 2**63])
def test_seq_must_fit_the_archive(seq: int) -> None:
    payload = message(VIN, samples=1, ts_ms=NOW, seq=seq)
    assert errors_for(payload) == [(("seq",), "out_of_range")]
    assert FAST.decode_valid(encode(payload), NOW) is None


def test_a_vin_with_a_trailing_newline_is_invalid() -> None:
    payload = message(VIN, samples=1, ts_ms=NOW)
    payload["vin"] = VIN + "\n"
    assert errors_for(payload) == [(("vin",), "invalid_vin")]
    assert FAST.decode_valid(encode(payload), NOW) is None


def test_timestamps_too_far_in_future_or_past() -> None:
    limits = Limits()
    future = message(VIN, samples=1, ts_ms=NOW + limits.max_future_skew_ms + 60_000)
    old = message(VIN, samples=1, ts_ms=NOW - limits.max_age_ms - 60_000)
    assert errors_for(future) == [(("samples", 0, "ts"), "in_future")]
    assert errors_for(old) == [(("samples", 0, "ts"), "too_old")]


def test_limits_on_samples_and_signals() -> None:
    small = Validator(CATALOG, Limits(max_samples=2, max_signals_per_sample=2))
    too_many = decode(encode(message(VIN, samples=3, ts_ms=NOW)))
    assert [e.type for e in small.validate(too_many, NOW)] == ["too_many"]
    wide = decode(encode(message(VIN, samples=1, ts_ms=NOW)))
    assert [e.loc for e in small.validate(wide, NOW)] == [("samples", 0, "signals")]


def test_decode_errors_name_the_field() -> None:
    bad = encode(message(VIN)).replace(b'"seq":1', b'"seq":"one"')
    with pytest.raises(msgspec.ValidationError) as exc:
        decode(bad)
    (error,) = decode_errors(exc.value)
    assert error.loc == ("body", "seq")
    with pytest.raises(msgspec.DecodeError) as exc2:
        decode(b"{")
    assert decode_errors(exc2.value)[0].type == "invalid_json"


# -- properties ------------------------------------------------------------------------------

NUMERIC = sorted(p for p, s in CATALOG.items() if s.kind in ("float", "int"))


def _in_range(path: str) -> st.SearchStrategy[object]:
    spec = CATALOG[path]
    if spec.kind == "float":
        return st.floats(min_value=spec.min, max_value=spec.max, allow_nan=False)
    if spec.kind == "int":
        return st.integers(min_value=int(spec.min), max_value=int(spec.max))
    if spec.kind == "bool":
        return st.booleans()
    if spec.kind == "string":
        return st.sampled_from(spec.allowed) if spec.allowed else st.text(max_size=20)
    return st.lists(st.from_regex(r"[PCBU][0-9A-F]{4}", fullmatch=True), max_size=5)


valid_signals = st.sampled_from(sorted(CATALOG)).flatmap(
    lambda path: _in_range(path).map(lambda value: (path, value))
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(valid_signals, min_size=1, max_size=8), min_size=1, max_size=5))
def test_any_in_catalog_message_is_valid(samples: list[list[tuple[str, object]]]) -> None:
    msg = TelemetryMessage(
        vin=VIN,
        message_id="m-1",
        seq=0,
        samples=[Sample(ts=NOW - i, signals=dict(pairs)) for i, pairs in enumerate(samples)],
    )
    assert VALIDATOR.validate(decode(msgspec.json.encode(msg)), NOW) == []


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NUMERIC), st.floats(min_value=1e-3, max_value=1e12), st.booleans())
def test_out_of_range_numbers_are_always_caught(path: str, excess: float, above: bool) -> None:
    spec = CATALOG[path]
    bound = spec.max if above else spec.min
    value: float | int = bound + excess if above else bound - excess
    if spec.kind == "int":
        value = int(value) + (1 if above else -1)
    msg = TelemetryMessage(vin=VIN, message_id="m", seq=0, samples=[Sample(NOW, {path: value})])
    assert [(e.loc[-1], e.type) for e in VALIDATOR.validate(msg, NOW)] == [(path, "out_of_range")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_never_crash_decoding(raw: bytes) -> None:
    try:
        msg = decode(raw)
    except msgspec.MsgspecError as exc:
        assert decode_errors(exc)
    else:
        VALIDATOR.validate(msg, NOW)


def test_a_full_vss_catalog_accepts_any_vss_signal_and_archives_it_as_extra(tmp_path) -> None:
    from tests.core.test_signals import VSS_REFERENCE

    if not VSS_REFERENCE.exists():
        pytest.skip(f"VSS 6.0 reference not found at {VSS_REFERENCE}")
    from core.signals import merged_catalog
    from ingestion.archive import ParquetArchive, RowBuffer

    door = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"
    payload = message(VIN, samples=1, ts_ms=NOW, signals={door: True, "Vehicle.Speed": 3.0})
    assert errors_for(payload) == [(("samples", 0, "signals", door), "unknown_signal")]
    catalog = merged_catalog(VSS_REFERENCE)
    full = Validator(catalog, Limits())
    msg = decode(encode(payload))
    assert full.validate(msg, NOW) == []
    bad = decode(encode(message(VIN, samples=1, ts_ms=NOW, signals={door: "open"})))
    assert [e.type for e in full.validate(bad, NOW)] == ["wrong_type"]
    archive = ParquetArchive(str(tmp_path))
    buffer = RowBuffer()
    buffer.add(msg, topic="t", partition=0, offset=0, received_at=None, catalog=archive.catalog,
               size=1)
    archive.write_roll(buffer)
    table = archive.dataset().to_table(columns=["Vehicle.Speed", "extra_signals"])
    assert table.to_pylist() == [{"Vehicle.Speed": 3.0, "extra_signals": f'{{"{door}":true}}'}]


# -- the typed fast path agrees with the reference validator --------------------------------

FAST = FastValidator(CATALOG, Limits())


def _any_value(path: str) -> st.SearchStrategy[object]:
    """Mostly valid values, and every kind of wrong one."""
    wrong = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**40), max_value=2**40),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.text(max_size=5),
        st.lists(st.text(max_size=3), max_size=2),
    )
    return st.one_of(_in_range(path), _in_range(path), wrong)


any_signal = st.one_of(
    st.sampled_from(sorted(CATALOG)),
    st.sampled_from(sorted(CATALOG)),
    st.text(min_size=1, max_size=12),
).flatmap(
    lambda p: (_any_value(p) if p in CATALOG else st.integers(-(2**40), 2**40)).map(
        lambda v: (p, v)
    )
)


@settings(max_examples=400, deadline=None)
@given(
    samples=st.lists(
        st.tuples(
            st.sampled_from([0, 1000, -(40 * 86_400_000), 3_600_000]),
            st.lists(any_signal, max_size=6),
        ),
        min_size=0,
        max_size=4,
    ),
    vin=st.sampled_from([VIN, "WVWZZZ1KZ0I000001", "short"]),
    seq=st.sampled_from([0, 5, -1]),
    message_id=st.sampled_from(["m-1", "", "x" * 65]),
)
def test_fast_path_accepts_exactly_what_the_validator_accepts(
    samples: list[tuple[int, list[tuple[str, object]]]], vin: str, seq: int, message_id: str
) -> None:
    payload = {
        "vin": vin,
        "message_id": message_id,
        "seq": seq,
        "samples": [{"ts": NOW - offset, "signals": dict(pairs)} for offset, pairs in samples],
    }
    raw = encode(payload)
    try:
        slow_ok = VALIDATOR.validate(decode(raw), NOW) == []
    except msgspec.MsgspecError:
        slow_ok = False
    fast = FAST.decode_valid(raw, NOW)
    assert (fast is not None) == slow_ok, payload
    if fast is not None:
        for sample, (_, pairs) in zip(fast.samples, samples, strict=True):
            expected = dict(pairs)
            got = {p: getattr(sample.signals, FAST.field_of[p]) for p in expected}
            assert got == expected
