"""Consumer batches as Arrow tables for the analytic workers (native and Python paths)."""

from __future__ import annotations

import time

import pytest
from aiokafka.structs import ConsumerRecord

from ingestion import columnar
from ingestion.batches import TelemetryBatchDecoder
from ingestion.validation import Limits
from tests.helpers import encode, message, new_vin

NOW = int(time.time() * 1000)


def record(offset: int, value: bytes, key: str) -> ConsumerRecord:
    return ConsumerRecord("telemetry.v1", 2, offset, NOW, 0, key.encode(), value, None,
                          len(key), len(value), [])


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_valid_records_become_rows_and_the_rest_is_skipped(native: bool) -> None:
    if native and not columnar.available():
        pytest.skip("the native extension is not built")
    vin, other = new_vin(11), new_vin(12)
    records = [
        record(0, encode(message(vin, seq=1, samples=3, message_id="a")), vin),
        record(1, b"{not json", vin),
        record(2, encode(message(vin, seq=2, signals={"Vehicle.Speed": 999.0})), vin),
        record(3, encode(message(other, seq=1, samples=2, message_id="b")), vin),  # wrong key
        record(4, encode(message(vin, seq=3, samples=2, message_id="c")).replace(
            b'"seq":3', b'"seq":3,"seq":3'), vin),  # valid, a repeated key
    ]
    decoder = TelemetryBatchDecoder(Limits(), native=native)
    assert decoder.native is native
    batch = decoder.decode(records, NOW)
    assert (batch.records, batch.skipped) == (5, 3)
    table = batch.table
    assert table.schema == decoder.schema
    assert table["message_id"].to_pylist() == ["a"] * 3 + ["c"] * 2
    assert table["kafka_offset"].to_pylist() == [0, 0, 0, 4, 4]
    assert table["Vehicle.Speed"].to_pylist() == [52.5] * 5
    assert decoder.decode([], NOW).table.num_rows == 0  # the buffers were handed over
