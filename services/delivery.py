"""The webhook dispatcher: claims due outbox events, POSTs them signed, records every attempt.

Delivery is at least once. Every attempt of an event carries the same ``webhook-id`` (the event
id) and a fresh ``webhook-timestamp`` and signature (Standard Webhooks, ``services.webhooks``).
A 2xx answer delivers the event; anything else (another status, a timeout, a refused
connection) is a failed attempt, retried after an exponential backoff with jitter
(``outbox.backoff_s``) until ``webhook_max_attempts``, when the event becomes ``dead`` and an
operator can replay it.

The engine is synchronous, so database calls run in a thread; each attempt is recorded in its
own short transaction right after its HTTP call, and no transaction is open during one. Several
dispatchers can run at once (``FOR UPDATE SKIP LOCKED`` and a lease; see ``services.outbox``).

``fleet services deliver`` counts attempts in ``fleet_webhook_attempts_total`` and serves
``/metrics``, ``/healthz`` (the loop ran within ``worker_liveness_s``) and ``/readyz`` (the
database answers) on ``FLEET_METRICS_PORT`` like a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import TracebackType

import httpx
import orjson
from sqlalchemy.engine import Engine

from core.config import Settings
from core.db import make_engine, session_scope, utcnow
from core.logging import configure_logging
from core.metrics import WEBHOOK_ATTEMPTS, OpsServer, database_answers
from services import outbox
from services.models import ServiceCenter, WebhookEvent
from services.webhooks import signature_headers

log = logging.getLogger(__name__)

USER_AGENT = "fleet-webhooks/1"
EXCERPT_BYTES = 500
"""How much of a receiver's answer the delivery log keeps."""
PROGRESS_EVERY_S = 30.0
MIN_IDLE_SLEEP_S = 0.005


@dataclass
class DeliveryStats:
    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    """Failed attempts, including the last one of each dead event."""
    dead: int = 0
    superseded: int = 0
    """Attempts whose outcome was not applied: the event had moved on (lease lost, replayed)."""
    pending: int = 0
    """Events still pending when :func:`deliver_until_idle` returned."""


@dataclass(frozen=True)
class _Response:
    status_code: int | None
    error: str | None
    excerpt: str | None = None


class Dispatcher:
    """Delivers due webhook events; ``run_once`` for one batch, ``run`` until stopped.

    An own HTTP client is created unless one is passed; close it with ``aclose`` or use the
    dispatcher as an async context manager. ``center_ids`` limits it to those centers."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
        center_ids: Collection[uuid.UUID] | None = None,
    ) -> None:
        if settings.webhook_lease_s <= settings.webhook_timeout_s:
            # Another dispatcher would take over events whose attempt is still in flight.
            raise ValueError("webhook_lease_s must be longer than webhook_timeout_s")
        if settings.webhook_max_attempts < 1 or settings.webhook_concurrency < 1:
            raise ValueError("webhook_max_attempts and webhook_concurrency must be at least 1")
        self.settings = settings
        self.engine = engine
        self.stats = DeliveryStats()
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=settings.webhook_timeout_s,
            limits=httpx.Limits(max_connections=settings.webhook_concurrency),
        )
        self._rng = rng or random.Random()
        self._clock = clock
        self._center_ids = None if center_ids is None else frozenset(center_ids)
        self.last_loop_at = time.time()
        """When ``run`` last started a round (liveness)."""
        self._attempt_outcomes = {
            outcome: WEBHOOK_ATTEMPTS.labels(outcome)
            for outcome in ("delivered", "failed", "dead", "superseded")
        }

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def run_once(self) -> int:
        """Claim the due events (at most ``webhook_concurrency``), attempt each once,
        concurrently, and record the outcomes; returns the number of attempts made.

        Every attempt finishes and is recorded even if another one's recording fails; the
        first such error is raised afterwards."""
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return 0
        results = await asyncio.gather(
            *(self._attempt(event, center) for event, center in claimed), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; a batch in flight is finished first. Sleeps
        ``webhook_poll_s`` (or until stopped) when nothing is due or the database failed."""
        log.info(
            "webhook dispatcher started: %d concurrent, %d attempts at most",
            self.settings.webhook_concurrency,
            self.settings.webhook_max_attempts,
        )
        logged, logged_at = replace(self.stats), time.monotonic()
        while not stop.is_set():
            self.last_loop_at = time.time()
            try:
                attempts = await self.run_once()
            except Exception:
                log.exception(
                    "webhook dispatch failed; retrying in %.1f s", self.settings.webhook_poll_s
                )
                attempts = 0
            if time.monotonic() - logged_at >= PROGRESS_EVERY_S and self.stats != logged:
                self._log_progress()
                logged, logged_at = replace(self.stats), time.monotonic()
            if attempts == 0:
                await _wait(stop, self.settings.webhook_poll_s)
        self._log_progress()
        log.info("webhook dispatcher stopped")

    def _claim(self) -> list[tuple[WebhookEvent, ServiceCenter]]:
        with session_scope(self.engine) as session:
            return outbox.claim_due(
                session,
                self._clock(),
                self.settings.webhook_concurrency,
                self.settings.webhook_lease_s,
                center_ids=self._center_ids,
            )

    async def _attempt(self, event: WebhookEvent, center: ServiceCenter) -> None:
        number = event.attempts + 1
        url = center.webhook_url or ""  # claim_due returns only centers with an endpoint
        started_at = self._clock()
        started = time.perf_counter()
        response = await self._post(event, center, url, started_at)
        result = outbox.AttemptResult(
            number=number,
            url=url,
            started_at=started_at,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            status_code=response.status_code,
            error=response.error,
            response_excerpt=response.excerpt,
        )
        delivered = response.error is None
        dead = not delivered and number >= self.settings.webhook_max_attempts
        next_attempt_at = None
        if not delivered and not dead:
            wait_s = outbox.backoff_s(
                number,
                self.settings.webhook_backoff_base_s,
                self.settings.webhook_backoff_max_s,
                self._rng,
            )
            next_attempt_at = self._clock() + timedelta(seconds=wait_s)
        applied = await asyncio.to_thread(
            self._record, event.id, result, delivered, next_attempt_at, dead
        )
        self._count(event, center, result, delivered=delivered, dead=dead, applied=applied)

    def _record(
        self,
        event_id: uuid.UUID,
        result: outbox.AttemptResult,
        delivered: bool,
        next_attempt_at: datetime | None,
        dead: bool,
    ) -> bool:
        with session_scope(self.engine) as session:
            return outbox.record_attempt(
                session,
                event_id,
                result,
                delivered=delivered,
                next_attempt_at=next_attempt_at,
                dead=dead,
            )

    async def _post(
        self, event: WebhookEvent, center: ServiceCenter, url: str, now: datetime
    ) -> _Response:
        body = orjson.dumps(event.payload)
        try:
            headers = signature_headers(
                outbox.signing_secrets(center, now),
                str(event.id),
                body,
                timestamp=int(now.timestamp()),
            )
        except ValueError:
            return _Response(None, "signing_error")  # a malformed secret: the event goes dead
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        status_code: int | None = None
        excerpt: str | None = None
        try:
            # httpx's timeout bounds each phase; this bounds the whole exchange (a receiver
            # that trickles its answer byte by byte).
            async with asyncio.timeout(self.settings.webhook_timeout_s):
                async with self._client.stream("POST", url, content=body, headers=headers) as r:
                    status_code = r.status_code
                    excerpt = await _read_excerpt(r)
        except (TimeoutError, httpx.HTTPError, httpx.InvalidURL) as exc:
            if status_code is None:
                return _Response(None, _error_code(exc))
            # The status line arrived and decides; only the answer's body was lost.
        if 200 <= status_code < 300:
            return _Response(status_code, None, excerpt)
        return _Response(status_code, f"http_{status_code}", excerpt)

    def _count(
        self,
        event: WebhookEvent,
        center: ServiceCenter,
        result: outbox.AttemptResult,
        *,
        delivered: bool,
        dead: bool,
        applied: bool,
    ) -> None:
        self.stats.attempts += 1
        outcome = "superseded" if not applied else "delivered" if delivered else "failed"
        self._attempt_outcomes[outcome].inc()
        if applied and dead:
            self._attempt_outcomes["dead"].inc()
        if not applied:
            self.stats.superseded += 1
            log.warning(
                "webhook event %s had moved on; attempt %d not applied", event.id, result.number
            )
        elif delivered:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            if dead:
                self.stats.dead += 1
                log.warning(
                    "webhook event %s (%s) to center %s is dead after %d attempts: %s",
                    event.id,
                    event.type,
                    center.code,
                    result.number,
                    result.error,
                )

    def _log_progress(self) -> None:
        stats = self.stats
        log.info(
            "webhooks: %d attempts, %d delivered, %d failed attempts, %d dead",
            stats.attempts,
            stats.delivered,
            stats.failed,
            stats.dead,
        )


async def deliver_until_idle(
    settings: Settings,
    engine: Engine,
    *,
    timeout_s: float,
    center_ids: Collection[uuid.UUID] | None = None,
    client: httpx.AsyncClient | None = None,
    rng: random.Random | None = None,
) -> DeliveryStats:
    """Deliver until no event is pending (delivered or dead) or ``timeout_s`` passed; for
    tests and the CLI. ``stats.pending`` tells which of the two happened."""
    deadline = time.monotonic() + timeout_s
    async with Dispatcher(
        settings, engine, client=client, rng=rng, center_ids=center_ids
    ) as dispatcher:
        while True:
            if await dispatcher.run_once() and time.monotonic() < deadline:
                continue
            backlog = await asyncio.to_thread(_backlog, engine, center_ids)
            dispatcher.stats.pending = backlog.pending
            left_s = deadline - time.monotonic()
            if backlog.next_due_at is None or left_s <= 0:
                return replace(dispatcher.stats)
            due_in_s = (backlog.next_due_at - utcnow()).total_seconds()
            wait_s = min(settings.webhook_poll_s, left_s, max(due_in_s, MIN_IDLE_SLEEP_S))
            await asyncio.sleep(wait_s)


def run_dispatcher(settings: Settings) -> None:
    """Entry of the CLI command: deliver webhooks until SIGTERM or SIGINT."""
    if settings.log_format == "json":  # the command set up text logging; JSON wins
        configure_logging("json", logging.getLevelName(logging.getLogger().getEffectiveLevel()))
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    engine = make_engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    ops: OpsServer | None = None
    try:
        async with Dispatcher(settings, engine) as dispatcher:

            async def liveness() -> str | None:
                silent = time.time() - dispatcher.last_loop_at
                if silent > settings.worker_liveness_s:
                    return f"the dispatch loop has not run for {silent:.0f} s"
                return None

            async def readiness() -> str | None:
                return await database_answers(engine)

            if settings.metrics_port:
                ops = OpsServer(
                    settings.metrics_host,
                    settings.metrics_port,
                    liveness=liveness,
                    readiness=readiness,
                )
                await ops.start()
            await dispatcher.run(stop)
    finally:
        if ops is not None:
            await ops.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        engine.dispose()


def _backlog(engine: Engine, center_ids: Collection[uuid.UUID] | None) -> outbox.Backlog:
    with session_scope(engine) as session:
        return outbox.pending_backlog(session, center_ids=center_ids)


async def _read_excerpt(response: httpx.Response) -> str | None:
    """The start of the answer, without reading more of it than the log keeps."""
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) >= EXCERPT_BYTES:
            break
    return received[:EXCERPT_BYTES].decode("utf-8", errors="replace") or None


def _error_code(exc: BaseException) -> str:
    """A short, stable name of why no answer came (the delivery log and ``last_error``)."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return "invalid_url"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol_error"
    return "network_error"


async def _wait(stop: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout_s)
