"""The native decoder (``ingestion._columnar``) agrees with the Python validators.

Whatever it accepts, the reference validator accepts, and it stores exactly the rows the Python
path stores (bit for bit, nulls included). On canonical JSON it accepts everything valid; on
unusual JSON text (other number spellings, escapes, whitespace, duplicate keys, malformed
bytes) it may refuse a valid record, which the worker then takes through the Python path.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.signals import CATALOG
from core.telemetry import decode
from ingestion import columnar
from ingestion.archive import RowBuffer, archive_schema
from ingestion.columnar import ColumnarBuffer, DecoderSpec
from ingestion.validation import Limits, Validator
from tests.helpers import encode, message, new_vin
from tests.ingestion.test_validation import _in_range, any_signal

if not columnar.available():
    if os.environ.get("FLEET_REQUIRE_NATIVE"):
        raise RuntimeError("ingestion._columnar is not built (FLEET_REQUIRE_NATIVE is set)")
    pytest.skip("the native extension is not built", allow_module_level=True)

NOW = int(time.time() * 1000)
LIMITS = Limits()
SCHEMA = archive_schema(CATALOG)
SPEC = DecoderSpec.build(SCHEMA, CATALOG, LIMITS)
VALIDATOR = Validator(CATALOG, LIMITS)
VIN = new_vin(7)


def reference(raws: list[bytes]) -> tuple[list[bool], pa.Table]:
    """Which records the Python path accepts, and the table it stores for them."""
    buffer = RowBuffer()
    accepted = []
    for offset, raw in enumerate(raws):
        try:
            msg = decode(raw)
            ok = VALIDATOR.validate(msg, NOW) == []
        except msgspec.MsgspecError:
            ok = False
        accepted.append(ok)
        if ok:
            buffer.add(msg, topic="t", partition=3, offset=offset, received_at=NOW - 5,
                       catalog=CATALOG, size=len(raw))
    return accepted, buffer.to_table(SCHEMA)


def native(raws: list[bytes]) -> tuple[list[bool], pa.Table]:
    buffer = ColumnarBuffer(spec=SPEC)
    accepted = []
    for offset, raw in enumerate(raws):
        got = buffer.decoder.push(raw, NOW, 3, offset, NOW - 5)
        accepted.append(got is not None)
        if got is not None:
            msg = decode(raw)
            assert got == (msg.vin, msg.message_id)
    table = buffer.to_table(SCHEMA)
    table.validate(full=True)
    return accepted, table


def assert_same_rows(ours: pa.Table, expected: pa.Table) -> None:
    """Equal column by column; floats compared by bit pattern (so -0.0 differs from 0.0)."""
    assert ours.schema == expected.schema
    assert ours.num_rows == expected.num_rows
    for name in expected.column_names:
        a, b = ours[name].combine_chunks(), expected[name].combine_chunks()
        assert a.is_null().equals(b.is_null()), name
        if pa.types.is_floating(a.type):
            bits_a = a.fill_null(0.0).to_numpy().view(np.uint64)
            bits_b = b.fill_null(0.0).to_numpy().view(np.uint64)
            assert np.array_equal(bits_a, bits_b), name
        else:
            assert a.equals(b), (name, a, b)


def check(raws: list[bytes], *, canonical: bool) -> None:
    ok_ref, table_ref = reference(raws)
    ok_nat, table_nat = native(raws)
    for raw, r, n in zip(raws, ok_ref, ok_nat, strict=True):
        assert r or not n, f"native accepted an invalid record: {raw[:300]!r}"
        if canonical:
            assert r == n, f"native refused a valid canonical record: {raw[:300]!r}"
    if ok_ref == ok_nat:
        assert_same_rows(table_nat, table_ref)
    else:  # compare only what both accepted
        both = [raw for raw, r, n in zip(raws, ok_ref, ok_nat, strict=True) if r and n]
        _, table_ref = reference(both)
        _, table_nat = native(both)
        assert_same_rows(table_nat, table_ref)


def test_simulator_messages_give_the_same_table() -> None:
    from loadtest.messages import iter_source

    raws = [item[2] for item in iter_source("simulator", 300, vehicles=30,
                                               samples_per_message=10, seed=3, end_ms=NOW)]
    check(raws, canonical=True)


def test_every_kind_of_column_and_nulls() -> None:
    signals = [
        {"Vehicle.Speed": 1.5, "Vehicle.LowVoltageSystemState": "ON",
         "Vehicle.Diagnostics.DTCList": ["P0420", "U0100"], "Vehicle.IsMoving": True},
        {"Vehicle.TraveledDistance": 12, "Vehicle.Diagnostics.DTCList": []},
        {"Vehicle.Speed": -0.0, "Vehicle.IsMoving": False, "Vehicle.LowVoltageSystemState": "OFF"},
    ]
    payload = {"vin": VIN, "message_id": "m-ü-1", "seq": 9, "sent_at": None,
               "samples": [{"ts": NOW - 10 + i, "signals": s} for i, s in enumerate(signals)]}
    check([encode(payload), encode(message(VIN, seq=2))], canonical=True)
    _, table = native([encode(payload)])
    assert table["Vehicle.Diagnostics.DTCList"].to_pylist() == [["P0420", "U0100"], [], None]
    assert table["Vehicle.LowVoltageSystemState"].to_pylist() == ["ON", None, "OFF"]
    assert table["message_id"].to_pylist() == ["m-ü-1"] * 3


def test_discard_last_and_take_reset_the_buffers() -> None:
    buffer = ColumnarBuffer(spec=SPEC)
    decoder = buffer.decoder
    first, second = encode(message(VIN, seq=1, samples=2)), encode(message(VIN, seq=2, samples=3))
    assert decoder.push(first, NOW, 0, 0, None) is not None
    assert decoder.push(second, NOW, 0, 1, None) is not None
    assert (decoder.rows, decoder.messages) == (5, 2)
    decoder.discard_last()
    assert (decoder.rows, decoder.messages) == (2, 1)
    with pytest.raises(ValueError, match="no message to discard"):
        decoder.discard_last()
    table = buffer.to_table(SCHEMA)
    assert table["seq"].to_pylist() == [1, 1]
    assert table["received_at"].null_count == 2
    assert (decoder.rows, decoder.messages) == (0, 0)
    assert buffer.to_table(SCHEMA).num_rows == 0


def test_a_refused_message_leaves_no_trace() -> None:
    good = message(VIN, seq=1, samples=2)
    bad = message(VIN, seq=2, samples=3)
    bad["samples"][2]["signals"]["Vehicle.Speed"] = 9999.0  # the last sample is out of range
    half_list = message(VIN, seq=4, samples=2)  # a list that fails after its first item
    half_list["samples"][1]["signals"]["Vehicle.Diagnostics.DTCList"] = ["P0420", 5]
    half_string = message(VIN, seq=5, samples=1)
    half_string["samples"][0]["signals"]["Vehicle.LowVoltageSystemState"] = "IGNITION"
    later = message(VIN, seq=6)
    later["samples"][0]["signals"]["Vehicle.Diagnostics.DTCList"] = ["U0100"]
    check([encode(m) for m in (good, bad, half_list, half_string, later)], canonical=True)


GOOD = encode(message(VIN, seq=1, samples=1, ts_ms=NOW - 1000, message_id="m-1",
                      signals={"Vehicle.Speed": 10.0, "Vehicle.TraveledDistance": 5}))


@pytest.mark.parametrize(
    "raw",
    [
        GOOD + b"x",
        GOOD + b" \n\t",
        b"\xef\xbb\xbf" + GOOD,
        GOOD.replace(b"10.0", b"010.0"),
        GOOD.replace(b"10.0", b"10."),
        GOOD.replace(b"10.0", b".5"),
        GOOD.replace(b"10.0", b"+10"),
        GOOD.replace(b"10.0", b"NaN"),
        GOOD.replace(b"10.0", b"Infinity"),
        GOOD.replace(b"10.0", b"1e999"),
        GOOD.replace(b"10.0", b"1E1"),
        GOOD.replace(b"10.0", b"-0"),
        GOOD.replace(b":5}", b":5.0}"),
        GOOD.replace(b":5}", b":5e0}"),
        GOOD.replace(b":5}", b":18446744073709551621}"),
        GOOD.replace(b":5}", b":5,}"),
        GOOD.replace(b'"m-1"', b"'m-1'"),
        GOOD.replace(b'"m-1"', b'"m-\x01"'),
        GOOD.replace(b'"m-1"', b'"m-\\x"'),
        GOOD.replace(b'"m-1"', b'"m-\\ud800"'),
        GOOD.replace(b'"m-1"', b'"m-\\u00fc"'),
        GOOD.replace(b'"m-1"', b'"m-\xff"'),
        GOOD.replace(b'"m-1"', b'"m-\xc3\xbc"'),
        GOOD.replace(b'"m-1"', b'"' + b"\xc3\xbc" * 64 + b'"'),
        GOOD.replace(b'"m-1"', b'"' + b"\xc3\xbc" * 65 + b'"'),
        GOOD.replace(b'"Vehicle.Speed"', b'"Vehicle\\u002eSpeed"'),
        GOOD.replace(b'"Vehicle.Speed"', b'"Vehicle.Speed ":'),
        GOOD.replace(b'"seq":1', b'"seq":1,"seq":2'),
        GOOD.replace(b'"seq":1', b'"seq":9223372036854775808'),
        GOOD.replace(b'"seq":1', b'"seq":1,"sent_at":123456789012345678901234'),
        GOOD.replace(b'"seq":1', b'"seq":1,"v":2'),
        GOOD.replace(b'"seq":1', b'"seq":1,"extra":0'),
        GOOD.replace(VIN.encode(), VIN.encode() + b"\\n"),
        GOOD.replace(VIN.encode(), VIN.lower().encode()),
        GOOD.replace(b'{"Vehicle.Speed":10.0,', b'{"Vehicle.Speed":10.0,"Vehicle.Speed":11.0,'),
        GOOD.replace(b'"signals"', b'"ts":1,"signals"'),
        GOOD.replace(b"/*", b""),
        GOOD[:-1],
        b"[" + GOOD + b"]",
        b"",
        b"null",
    ],
)
def test_unusual_json_never_makes_it_accept_something_invalid(raw: bytes) -> None:
    check([raw], canonical=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    seq=st.sampled_from([0, 5, -1, 2**63]),
    message_id=st.sampled_from(["m-1", "", "x" * 65, "ü" * 64]),
)
def test_canonical_json_is_accepted_exactly_when_valid(
    samples: list[tuple[int, list[tuple[str, object]]]], vin: str, seq: int, message_id: str
) -> None:
    payload = {
        "vin": vin,
        "message_id": message_id,
        "seq": seq,
        "samples": [{"ts": NOW - offset, "signals": dict(pairs)} for offset, pairs in samples],
    }
    check([encode(payload)], canonical=True)


def _render(value: Any, rng: random.Random) -> str:
    """JSON text of ``value`` in one of the many spellings JSON allows."""
    space = rng.choice(["", "", " ", "\n  "])
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        body = f",{space}".join(f"{_render_key(k, rng)}{space}:{space}{_render(v, rng)}"
                                for k, v in items)
        return "{" + space + body + space + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(_render(v, rng) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return rng.choice([str(value), str(value), f"{value}.0", f"{value}e0", f"{value}E+0"])
    if isinstance(value, float):
        return rng.choice([repr(value), f"{value:.17g}", f"{value:.6e}", f"{value:.3f}"])
    return _render_key(value, rng)


def _render_key(text: str, rng: random.Random) -> str:
    if rng.random() < 0.2:  # escape one character
        i = rng.randrange(len(text)) if text else 0
        if text:
            return json.dumps(text[:i], ensure_ascii=False)[:-1] + f"\\u{ord(text[i]):04x}" + \
                json.dumps(text[i + 1:], ensure_ascii=False)[1:]
    return json.dumps(text, ensure_ascii=rng.random() < 0.5)


@settings(max_examples=300, deadline=None)
@given(
    signals=st.lists(
        st.sampled_from(sorted(CATALOG)).flatmap(lambda p: _in_range(p).map(lambda v: (p, v))),
        min_size=1, max_size=8,
    ),
    seed=st.integers(0, 2**32),
)
def test_any_spelling_of_a_valid_message_stores_the_same_values(
    signals: list[tuple[str, object]], seed: int
) -> None:
    payload = {"vin": VIN, "message_id": "spell-1", "seq": 1,
               "samples": [{"ts": NOW - 1000, "signals": dict(signals)}]}
    check([_render(payload, random.Random(seed)).encode()], canonical=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
       st.integers(0, len(GOOD)))
def test_arbitrary_bytes_and_damaged_messages_never_pass(noise: bytes, cut: int) -> None:
    check([noise, GOOD[:cut] + noise + GOOD[cut:]], canonical=False)
