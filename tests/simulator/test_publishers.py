"""Publishers: HTTP against a mock transport (status handling, retries, gzip, auth) and Kafka
against a real broker."""

from __future__ import annotations

import gzip

import httpx
import pytest

from core.localkafka import ensure_topics
from core.telemetry import HEADER_SOURCE, TelemetryMessage, decode
from simulator.fleet import make_fleet
from simulator.publishers import HttpPublisher, KafkaPublisher, ListPublisher, Publisher
from simulator.runner import iter_messages, run_simulation
from tests.helpers import headers_dict, read_topic
from tests.simulator.support import START_MS

FLEET = make_fleet(3, seed=41)
TOKENS = {v.vin: f"token-{i}" for i, v in enumerate(FLEET)}


def _messages(n: int = 6) -> list[TelemetryMessage]:
    return list(iter_messages(FLEET, START_MS, 600, seed=1))[:n]


class _Server:
    """A scripted ingest endpoint: answers from ``script`` in turn, then 202."""

    def __init__(self, *script: int | type[Exception]) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else 202
        if isinstance(step, type):
            raise step("scripted failure", request=request)  # type: ignore[call-arg]
        headers = {"Retry-After": "0.05"} if step == 429 else {}
        body = {"error": "invalid_request"} if 400 <= step < 500 else {"status": "ok"}
        return httpx.Response(step, json=body, headers=headers)

    def publisher(self, **kw: object) -> HttpPublisher:
        return HttpPublisher(
            "http://ingest.test/", TOKENS, transport=httpx.MockTransport(self),
            backoff_s=0.001, **kw,  # type: ignore[arg-type]
        )  # fmt: skip


def test_every_publisher_satisfies_the_protocol() -> None:
    for publisher in (ListPublisher(), HttpPublisher("http://x", {}), KafkaPublisher("x:9092")):
        assert isinstance(publisher, Publisher)


async def test_http_posts_json_with_the_vehicles_token() -> None:
    server = _Server()
    messages = _messages()
    async with server.publisher() as publisher:
        for m in messages:
            assert await publisher.publish(m) is True
    assert [str(r.url) for r in server.requests] == ["http://ingest.test/v1/telemetry"] * 6
    for request, m in zip(server.requests, messages, strict=True):
        assert request.method == "POST"
        assert request.headers["Authorization"] == f"Bearer {TOKENS[m.vin]}"
        assert request.headers["Content-Type"] == "application/json"
        assert "Content-Encoding" not in request.headers
        assert decode(request.content) == m
    stats = publisher.stats
    assert (stats.sent, stats.accepted, stats.rejected, stats.failed) == (6, 6, 0, 0)
    assert stats.statuses == {"202": 6}


async def test_http_gzip() -> None:
    server = _Server()
    (m,) = _messages(1)
    async with server.publisher(gzip=True) as publisher:
        assert await publisher.publish(m)
    request = server.requests[0]
    assert request.headers["Content-Encoding"] == "gzip"
    assert decode(gzip.decompress(request.content)) == m


async def test_http_retries_503_and_connection_errors_with_the_same_message() -> None:
    server = _Server(503, httpx.ConnectError, 429, 202)
    (m,) = _messages(1)
    async with server.publisher() as publisher:
        assert await publisher.publish(m) is True
    assert len(server.requests) == 4
    assert len({r.content for r in server.requests}) == 1, "a retry re-sends the same message"
    stats = publisher.stats
    assert (stats.sent, stats.accepted, stats.failed, stats.retries) == (1, 1, 0, 3)
    assert stats.statuses == {"503": 1, "ConnectError": 1, "429": 1, "202": 1}


async def test_http_gives_up_after_max_retries() -> None:
    server = _Server(*[httpx.ConnectError] * 10)
    (m,) = _messages(1)
    async with server.publisher(max_retries=3) as publisher:
        assert await publisher.publish(m) is False
    assert len(server.requests) == 4
    assert (publisher.stats.failed, publisher.stats.retries) == (1, 3)


async def test_http_counts_4xx_as_rejected_without_retrying() -> None:
    server = _Server(422, 500)
    first, second = _messages(2)
    async with server.publisher() as publisher:
        assert await publisher.publish(first) is False
        assert await publisher.publish(second) is False  # 500 is not retried either
    assert len(server.requests) == 2
    stats = publisher.stats
    assert (stats.sent, stats.accepted, stats.rejected, stats.failed) == (2, 0, 1, 1)
    (rejection,) = publisher.rejections
    assert (rejection.message_id, rejection.status) == (first.message_id, 422)
    assert "invalid_request" in rejection.body


async def test_http_refuses_a_vin_without_token() -> None:
    (m,) = _messages(1)
    publisher = HttpPublisher("http://x", {}, transport=httpx.MockTransport(_Server()))
    with pytest.raises(KeyError):
        await publisher.publish(m)
    await publisher.stop()


async def test_run_simulation_over_http() -> None:
    server = _Server(503)
    async with server.publisher() as publisher:
        result = await run_simulation(FLEET, publisher, duration_s=0.5, speedup=1200,
                                      start_ms=START_MS)  # fmt: skip
    assert result.messages_sent == publisher.stats.accepted == result.published_ok > 0
    assert len(server.requests) == result.messages_sent + 1


async def test_kafka_publisher_produces_keyed_json(kafka_bootstrap: str, unique_name: str) -> None:
    await ensure_topics(kafka_bootstrap, {unique_name: 3})
    messages = _messages(9)
    async with KafkaPublisher(kafka_bootstrap, unique_name) as publisher:
        for m in messages:
            assert await publisher.publish(m) is True
    assert (publisher.stats.sent, publisher.stats.accepted, publisher.stats.failed) == (9, 9, 0)
    records = await read_topic(kafka_bootstrap, unique_name, expected=9)
    assert len(records) == 9
    by_id = {m.message_id: m for m in messages}
    partitions: dict[str, set[int]] = {}
    for record in records:
        message = decode(record.value)
        assert record.key == message.vin.encode()
        assert headers_dict(record.headers)[HEADER_SOURCE] == "kafka"
        assert by_id[message.message_id] == message
        partitions.setdefault(message.vin, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values()), "key = VIN keeps a vehicle together"
