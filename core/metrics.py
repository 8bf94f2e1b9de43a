"""Prometheus metrics of every process, defined in one place (``docs/observability.md``).

* The API records ``fleet_http_request_duration_seconds`` in :class:`HttpMetricsMiddleware`
  (labelled with the matched route *template*, never the raw path) and serves ``/metrics``
  itself, together with the campaign gauges of :class:`CampaignCollector` (computed from the
  database at scrape time, bounded and cached briefly).
* Workers update the ``fleet_worker_*`` series once per batch (children bound per worker, so
  the hot path does no label lookups) and serve ``/metrics``, ``/healthz`` and ``/readyz`` on
  ``FLEET_METRICS_PORT`` through :class:`OpsServer`, a tiny HTTP server on the worker's own
  event loop.

Metrics live in prometheus_client's default registry (one process, one registry); the campaign
collector lives in a registry of its own per app, so several apps in one process (tests) never
register a collector twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

# -- HTTP API ------------------------------------------------------------------------------

HTTP_REQUEST_DURATION = Histogram(
    "fleet_http_request_duration_seconds",
    "HTTP request latency by method, route template and status class.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UNMATCHED_ROUTE = "<unmatched>"

# -- Kafka workers -------------------------------------------------------------------------

WORKER_MESSAGES = Counter(
    "fleet_worker_messages",
    "Records a worker consumed, by outcome (processed, dead_lettered, duplicate, skipped).",
    ["worker", "outcome"],
)
WORKER_BATCHES = Counter("fleet_worker_batches", "Consumer batches handled.", ["worker"])
WORKER_BATCH_DURATION = Histogram(
    "fleet_worker_batch_duration_seconds",
    "Time to handle one consumer batch (including sending its dead letters).",
    ["worker"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WORKER_CONSUMER_LAG = Gauge(
    "fleet_worker_consumer_lag",
    "Records behind the high watermark per assigned partition (from the last commit).",
    ["worker", "topic", "partition"],
)
WORKER_COMMITS = Counter("fleet_worker_commits", "Offset commits.", ["worker"])
WORKER_REBALANCES = Counter(
    "fleet_worker_rebalances", "Partition assignments received (group rebalances).", ["worker"]
)
WORKER_LAST_POLL = Gauge(
    "fleet_worker_last_poll_timestamp_seconds",
    "When the poll loop last returned (Unix time); liveness alerts on its age.",
    ["worker"],
)

OUTCOMES = ("processed", "dead_lettered", "duplicate", "skipped")


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """The label children of one worker, bound once (``.labels()`` costs a locked lookup)."""

    name: str
    processed: Any
    dead_lettered: Any
    duplicate: Any
    skipped: Any
    batches: Any
    batch_duration: Any
    commits: Any
    rebalances: Any
    last_poll: Any

    @classmethod
    def bind(cls, worker: str) -> WorkerMetrics:
        messages = {outcome: WORKER_MESSAGES.labels(worker, outcome) for outcome in OUTCOMES}
        return cls(
            name=worker,
            batches=WORKER_BATCHES.labels(worker),
            batch_duration=WORKER_BATCH_DURATION.labels(worker),
            commits=WORKER_COMMITS.labels(worker),
            rebalances=WORKER_REBALANCES.labels(worker),
            last_poll=WORKER_LAST_POLL.labels(worker),
            **messages,
        )

    def record_batch(
        self, consumed: int, processed: int, duplicates: int, dead_lettered: int, seconds: float
    ) -> None:
        """One batch's outcomes. Handlers count duplicates among the processed records, and
        records neither processed nor dead-lettered were skipped (invalid telemetry that the
        archive worker dead-letters, ignored events)."""
        self.batches.inc()
        self.batch_duration.observe(seconds)
        if processed > duplicates:
            self.processed.inc(processed - duplicates)
        if duplicates:
            self.duplicate.inc(duplicates)
        if dead_lettered:
            self.dead_lettered.inc(dead_lettered)
        skipped = consumed - processed - dead_lettered
        if skipped > 0:
            self.skipped.inc(skipped)

    def set_lag(self, lag: dict[tuple[str, int], int], previous: set[tuple[str, int]]) -> None:
        """Set the lag gauges of the assigned partitions and drop those no longer assigned."""
        for topic, partition in previous - lag.keys():
            with contextlib.suppress(KeyError):
                WORKER_CONSUMER_LAG.remove(self.name, topic, str(partition))
        for (topic, partition), value in lag.items():
            WORKER_CONSUMER_LAG.labels(self.name, topic, str(partition)).set(value)


# -- webhook dispatcher --------------------------------------------------------------------

WEBHOOK_ATTEMPTS = Counter(
    "fleet_webhook_attempts",
    "Webhook delivery attempts by outcome (delivered, failed, dead, superseded).",
    ["outcome"],
)


# -- OTA campaigns (computed at scrape time) -----------------------------------------------

MAX_RUNNING_CAMPAIGNS = 50
"""The per-campaign gauges cover at most this many running campaigns (newest launches)."""


class CampaignCollector(Collector):
    """Campaign gauges read from the database when scraped: campaigns by state, and for each
    running campaign (at most :data:`MAX_RUNNING_CAMPAIGNS`) its current wave and vehicles by
    install-record state. Three indexed aggregate queries, cached for ``cache_s`` so several
    scrapers cost one query set; a database failure yields ``fleet_campaign_metrics_up 0``
    instead of failing the whole scrape."""

    def __init__(self, engine: Engine, cache_s: float = 10.0) -> None:
        self.engine = engine
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, CampaignSnapshot] | None = None

    def describe(self) -> list[Any]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "fleet_campaign_metrics_up", "1 when the campaign gauges could be read."
        )
        try:
            snapshot = self.snapshot()
        except Exception as exc:  # noqa: BLE001 - the other metrics must still be served
            log.warning("campaign metrics unavailable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_state = GaugeMetricFamily("fleet_campaigns", "OTA campaigns by state.", labels=["state"])
        for state, count in sorted(snapshot.campaigns_by_state.items()):
            by_state.add_metric([state], count)
        yield by_state
        wave = GaugeMetricFamily(
            "fleet_campaign_current_wave",
            "The current wave of each running campaign (0-based).",
            labels=["campaign_id", "campaign"],
        )
        vehicles = GaugeMetricFamily(
            "fleet_campaign_vehicles",
            "Vehicles of each running campaign by install-record state (a vehicle with "
            "several ECUs in different states counts once per state).",
            labels=["campaign_id", "campaign", "state"],
        )
        for campaign_id, (name, current_wave) in snapshot.running.items():
            wave.add_metric([campaign_id, name], current_wave)
            for state, count in sorted(snapshot.vehicles.get(campaign_id, {}).items()):
                vehicles.add_metric([campaign_id, name, state], count)
        yield wave
        yield vehicles

    def snapshot(self) -> CampaignSnapshot:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_s:
                return self._cached[1]
            snapshot = read_campaign_snapshot(self.engine)
            self._cached = (now, snapshot)
            return snapshot


@dataclass(frozen=True)
class CampaignSnapshot:
    campaigns_by_state: dict[str, int]
    running: dict[str, tuple[str, int]]
    """campaign id -> (name, current wave)."""
    vehicles: dict[str, dict[str, int]]
    """campaign id -> install-record state -> distinct vehicles."""


def read_campaign_snapshot(engine: Engine) -> CampaignSnapshot:
    """The campaign gauges' numbers (aggregates over indexed columns only)."""
    from sqlalchemy import func
    from sqlmodel import Session, col, select

    from ota.models import Campaign, CampaignState, InstallRecord

    with Session(engine) as session:
        by_state = {
            state: count
            for state, count in session.exec(
                select(Campaign.state, func.count()).group_by(col(Campaign.state))
            )
        }
        running = {
            str(campaign_id): (name, current_wave)
            for campaign_id, name, current_wave in session.exec(
                select(Campaign.id, Campaign.name, Campaign.current_wave)
                .where(Campaign.state == CampaignState.running.value)
                .order_by(col(Campaign.launched_at).desc())
                .limit(MAX_RUNNING_CAMPAIGNS)
            )
        }
        vehicles: dict[str, dict[str, int]] = {}
        if running:
            ids = [_uuid(campaign_id) for campaign_id in running]
            rows = session.exec(
                select(
                    InstallRecord.campaign_id,
                    InstallRecord.state,
                    func.count(func.distinct(InstallRecord.vin)),
                )
                .where(col(InstallRecord.campaign_id).in_(ids))
                .group_by(col(InstallRecord.campaign_id), col(InstallRecord.state))
            )
            for campaign_id, state, count in rows:
                vehicles.setdefault(str(campaign_id), {})[state] = count
    return CampaignSnapshot(by_state, running, vehicles)


def _uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


# -- exposition ----------------------------------------------------------------------------


def exposition(*extra: CollectorRegistry) -> bytes:
    """The text exposition of the default registry plus ``extra`` registries."""
    return b"".join([generate_latest(REGISTRY), *(generate_latest(r) for r in extra)])


# -- worker ops server ---------------------------------------------------------------------

Check = Callable[[], Awaitable[str | None]]
"""A readiness or liveness check: None when fine, else the reason (shown in the 503 body)."""

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_REQUEST_HEAD = 8192
_READ_TIMEOUT_S = 5.0


class OpsServer:
    """``GET /metrics``, ``/healthz`` and ``/readyz`` over HTTP/1.0-style one-shot
    connections, on the running event loop (no thread, no framework). Checks that time out
    count as failed."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        liveness: Check,
        readiness: Check,
        check_timeout_s: float = 3.0,
    ) -> None:
        self.host, self.port = host, port
        self.liveness, self.readiness = liveness, readiness
        self.check_timeout_s = check_timeout_s
        self._server: asyncio.Server | None = None

    @property
    def bound_port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> bool:
        """Listen; False (and a logged error) when the port is taken: the worker still runs,
        without metrics and probes."""
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            log.warning("metrics server not started on %s:%s: %s", self.host, self.port, exc)
            return False
        log.info("metrics, /healthz and /readyz on http://%s:%s", self.host, self.bound_port)
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = await self._route(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, content_type, body = 400, "text/plain", b"bad request\n"
        except Exception:  # noqa: BLE001 - a probe must get an answer, not a dropped socket
            log.exception("metrics server request failed")
            status, content_type, body = 503, "text/plain", b"internal error\n"
        try:
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Bad Request')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, head: bytes) -> tuple[int, str, bytes]:
        if len(head) > _MAX_REQUEST_HEAD:
            return 400, "text/plain", b"request too large\n"
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if method != "GET":
            return 405, "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, exposition()
        if path in ("/healthz", "/readyz"):
            check = self.liveness if path == "/healthz" else self.readiness
            try:
                async with asyncio.timeout(self.check_timeout_s):
                    problem = await check()
            except TimeoutError:
                problem = f"check timed out after {self.check_timeout_s:g} s"
            if problem is None:
                return 200, "application/json", b'{"status":"ok"}'
            return 503, "application/json", orjson.dumps({"status": "fail", "reason": problem})
        return 404, "text/plain", b"not found\n"


async def database_answers(engine: Engine) -> str | None:
    """None when the database answers ``SELECT 1``, else why not."""
    from sqlalchemy import text

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await asyncio.to_thread(ping)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"database not reachable: {exc.__class__.__name__}"
    return None
