"""HTTP ingest -> Kafka -> validate-and-archive worker -> Parquet, on a real broker."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip

import orjson
import pyarrow.compute as pc
import pytest
from aiokafka import AIOKafkaProducer
from fastapi.testclient import TestClient

from core.config import Settings
from core.workers import build_runner
from ingestion.archive import ParquetArchive
from tests.helpers import encode, headers_dict, message, new_vin, read_topic, run_until_consumed

pytestmark = pytest.mark.kafka


def run_archive(settings: Settings, idle_s: float = 3.0, *, expect: int | None = None) -> dict:
    """Until idle for ``idle_s``, or (``expect``) until that many records were consumed."""
    # A group of this test's own (its topics are unique): a worker killed by another test
    # stays a member of the shared "fleet.archive" group until its session times out.
    runner = build_runner(settings, "archive", group_id=f"archive-{settings.telemetry_topic}")
    if expect is not None:
        return run_until_consumed(runner, expect).as_dict()
    stats = asyncio.run(runner.run(until_idle_s=idle_s))
    return stats.as_dict()


def post(client: TestClient, token: str, payload: dict, **kw) -> object:
    return client.post(
        "/v1/telemetry", content=encode(payload), headers={"Authorization": f"Bearer {token}"}, **kw
    )


def test_ingest_acknowledges_after_kafka_and_archive_stores_once(
    client: TestClient, settings: Settings, vehicle: tuple[str, str]
) -> None:
    vin, token = vehicle
    first = message(vin, seq=1, samples=5)
    second = message(vin, seq=2, samples=4)
    for payload in (first, second):
        response = post(client, token, payload)
        assert response.status_code == 202, response.text
        assert response.json()["samples"] == len(payload["samples"])
    # The vehicle re-sends the first message (lost ack): accepted again, stored once.
    assert post(client, token, first).status_code == 202
    gz = gzip.compress(encode(message(vin, seq=3, samples=2)))
    response = client.post(
        "/v1/telemetry",
        content=gz,
        headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 202, response.text

    records = asyncio.run(read_topic(settings.bootstrap_servers, settings.telemetry_topic, 4))
    assert len(records) == 4
    assert all(r.key == vin.encode() for r in records)
    assert headers_dict(records[0].headers)["source"] == "http"

    stats = run_archive(settings)
    assert stats["duplicates"] == 1
    assert stats["dead_lettered"] == 0
    table = ParquetArchive(settings.archive_location).read(
        vin, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), dt.datetime.now(dt.UTC)
    )
    assert table.num_rows == 5 + 4 + 2
    third_id = orjson.loads(gzip.decompress(gz))["message_id"]
    assert set(table["message_id"].to_pylist()) == {
        first["message_id"],
        second["message_id"],
        third_id,
    }
    speeds = pc.unique(table["Vehicle.Speed"]).to_pylist()
    assert speeds == [52.5]
    assert table["Vehicle.LowVoltageSystemState"].to_pylist()[0] == "ON"


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_bad_records_on_the_bus_go_to_dlq_with_reason(settings: Settings, native: bool) -> None:
    settings = settings.model_copy(update={"archive_native_decoder": native})
    vin = new_vin()
    good = encode(message(vin, seq=1, message_id="good"))
    # Valid, in JSON the native decoder leaves to Python: a repeated key, a 70-bit sent_at.
    repeated = encode(message(vin, seq=2, message_id="repeated")).replace(
        b'"seq":2', b'"seq":5,"seq":2'
    )
    big_sent_at = encode(message(vin, seq=3, message_id="big-sent-at")).replace(
        b'"seq":3', b'"seq":3,"sent_at":%d' % 2**70
    )
    bad = {
        "unknown_signal": encode(message(vin, seq=4, signals={"Vehicle.NoSuchSignal": 1.0})),
        "out_of_range": encode(message(vin, seq=5, signals={"Vehicle.Speed": 9999.0})),
        "wrong_type": encode(message(vin, seq=6, signals={"Vehicle.Speed": "fast"})),
        "invalid_json": b"{not json",
        "seq_out_of_range": encode(message(vin, seq=2**63)),
        "invalid_utf8": encode(message(vin, seq=7, message_id="m-X")).replace(b"m-X", b"m-\xff"),
        "key_mismatch": encode(message(new_vin(), seq=8)),
    }
    payloads = [good, repeated, big_sent_at, *bad.values()]

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for value in payloads:
                await producer.send_and_wait(settings.telemetry_topic, value, key=vin.encode())
        finally:
            await producer.stop()

    asyncio.run(produce())
    stats = run_archive(settings)
    assert (stats["processed"], stats["dead_lettered"]) == (3, len(bad))
    table = ParquetArchive(settings.archive_location).dataset().to_table()
    assert sorted(set(table["message_id"].to_pylist())) == ["big-sent-at", "good", "repeated"]
    assert table.filter(pc.equal(table["message_id"], "repeated"))["seq"].to_pylist() == [2] * 3

    letters = asyncio.run(
        read_topic(settings.bootstrap_servers, settings.telemetry_dlq_topic, len(bad))
    )
    by_value = {r.value: headers_dict(r.headers) for r in letters}
    assert {name: by_value[value]["dlq.reason"] for name, value in bad.items()} == {
        "unknown_signal": "unknown_signal",
        "out_of_range": "out_of_range",
        "wrong_type": "wrong_type",
        "invalid_json": "invalid_json",  # the original bytes are kept (they are the key here)
        "seq_out_of_range": "out_of_range",
        "invalid_utf8": "invalid_json",
        "key_mismatch": "key_mismatch",
    }
    meta = by_value[bad["out_of_range"]]
    assert meta["dlq.source.topic"] == settings.telemetry_topic
    assert "Vehicle.Speed" in meta["dlq.detail"]


def test_restarted_worker_does_not_archive_twice(settings: Settings) -> None:
    vin = new_vin()

    async def produce(seqs: range) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for seq in seqs:
                await producer.send_and_wait(
                    settings.telemetry_topic,
                    encode(message(vin, seq=seq, message_id=f"m{seq}")),
                    key=vin.encode(),
                )
        finally:
            await producer.stop()

    asyncio.run(produce(range(0, 20)))
    assert run_archive(settings, expect=20)["consumed"] == 20
    asyncio.run(produce(range(10, 30)))  # 10 re-sent duplicates, 10 new
    stats = run_archive(settings, expect=20)
    assert stats["consumed"] == 20  # it went on from the committed offsets
    assert stats["duplicates"] == 10, stats
    table = ParquetArchive(settings.archive_location).dataset().to_table(columns=["message_id"])
    ids = table["message_id"].to_pylist()
    assert len(set(ids)) == 30
    assert len(ids) == 30 * 3  # three samples per message, each stored once
