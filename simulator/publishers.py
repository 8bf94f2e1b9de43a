"""Where simulated messages go: the HTTP ingest API, Kafka directly, or a list (tests).

Every publisher follows :class:`Publisher`: ``await start()`` (optional: ``publish`` starts a
publisher on first use), ``await publish(message) -> bool`` (True when the message was
accepted), ``await stop()``, and ``stats``. All of them are async context managers.
"""

from __future__ import annotations

import asyncio
import gzip as gzip_lib
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

import httpx

from core.telemetry import HEADER_SOURCE, TelemetryMessage, encode

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class PublisherStats:
    sent: int = 0
    """Messages handed to ``publish``."""
    accepted: int = 0
    rejected: int = 0
    """Refused for good (HTTP 4xx other than 429)."""
    failed: int = 0
    """Not delivered: server errors or connection failures after the last retry."""
    retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    """Every attempt's outcome: HTTP status (``"202"``) or the exception class name."""

    def snapshot(self) -> PublisherStats:
        return PublisherStats(
            self.sent, self.accepted, self.rejected, self.failed, self.retries,
            Counter(self.statuses),
        )  # fmt: skip


@runtime_checkable
class Publisher(Protocol):
    stats: PublisherStats

    async def start(self) -> None: ...

    async def publish(self, message: TelemetryMessage) -> bool: ...

    async def stop(self) -> None: ...


class _Lifecycle:
    stats: PublisherStats

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ListPublisher(_Lifecycle):
    """Keeps every published message in ``messages`` (in publish order)."""

    def __init__(self) -> None:
        self.messages: list[TelemetryMessage] = []
        self.stats = PublisherStats()
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def publish(self, message: TelemetryMessage) -> bool:
        self.stats.sent += 1
        self.messages.append(message)
        self.stats.accepted += 1
        self.stats.statuses["ok"] += 1
        return True

    async def stop(self) -> None:
        self.started = False


@dataclass(frozen=True)
class Rejection:
    vin: str
    message_id: str
    status: int
    body: str


class HttpPublisher(_Lifecycle):
    """``POST {base_url}/v1/telemetry`` with the vehicle's bearer token.

    2xx counts as accepted, 4xx (except 429) as rejected (kept in ``rejections``, newest
    1000). 429, 502, 503, 504 and connection errors are retried with exponential backoff
    and jitter (honouring ``Retry-After``), re-sending the same bytes, so the same
    ``message_id``: ingest is idempotent, a retry after a lost answer does no harm.
    """

    def __init__(
        self,
        base_url: str,
        tokens: Mapping[str, str],
        *,
        gzip: bool = False,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = dict(tokens)
        self.gzip = gzip
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_connections = max_connections
        self.transport = transport
        self.stats = PublisherStats()
        self.rejections: list[Rejection] = []
        self._client: httpx.AsyncClient | None = None
        self._jitter = random.Random(0)

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout_s,
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                ),
                transport=self.transport,
            )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def publish(self, message: TelemetryMessage) -> bool:
        token = self.tokens.get(message.vin)
        if token is None:
            raise KeyError(f"no token for VIN {message.vin}")
        await self.start()
        assert self._client is not None
        self.stats.sent += 1
        body = encode(message)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if self.gzip:
            body = gzip_lib.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                response = await self._client.post("/v1/telemetry", content=body, headers=headers)
            except httpx.TransportError as exc:
                self.stats.statuses[type(exc).__name__] += 1
            else:
                status = response.status_code
                self.stats.statuses[str(status)] += 1
                if 200 <= status < 300:
                    self.stats.accepted += 1
                    return True
                if 400 <= status < 500 and status != 429:
                    self.stats.rejected += 1
                    self.rejections.append(
                        Rejection(message.vin, message.message_id, status, response.text[:2000])
                    )
                    del self.rejections[:-1000]
                    return False
                if status not in RETRY_STATUSES:
                    break
                retry_after = _retry_after(response.headers.get("Retry-After"))
            if attempt == self.max_retries:
                break
            self.stats.retries += 1
            delay = self.backoff_s * 2**attempt * (0.5 + self._jitter.random())
            if retry_after is not None:
                delay = max(delay, retry_after)
            await asyncio.sleep(min(delay, self.max_backoff_s))
        self.stats.failed += 1
        return False


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class KafkaPublisher(_Lifecycle):
    """Produces straight to the telemetry topic: key = VIN, value = the message as JSON
    (``core.telemetry.encode``), header ``source: kafka``; idempotent producer, ``acks=all``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = "telemetry.v1",
        *,
        client_id: str = "fleet-simulator",
        linger_ms: int = 20,
        compression_type: str | None = None,
        **producer_options: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.options = dict(
            client_id=client_id,
            linger_ms=linger_ms,
            compression_type=compression_type,
            **producer_options,
        )
        self.stats = PublisherStats()
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self._producer is not None:
                return
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                **self.options,
            )
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    async def publish(self, message: TelemetryMessage) -> bool:
        from aiokafka.errors import KafkaError

        if self._producer is None:
            await self.start()
        self.stats.sent += 1
        try:
            await self._producer.send_and_wait(
                self.topic,
                encode(message),
                key=message.vin.encode(),
                headers=[(HEADER_SOURCE, b"kafka")],
            )
        except KafkaError as exc:
            self.stats.statuses[type(exc).__name__] += 1
            self.stats.failed += 1
            return False
        self.stats.statuses["ok"] += 1
        self.stats.accepted += 1
        return True
