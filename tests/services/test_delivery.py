"""Webhook delivery end to end: the outbox, the dispatcher and a real HTTP receiver on
127.0.0.1 that verifies every request, deduplicates on ``webhook-id`` and misbehaves on
purpose (errors, answers slower than the client waits, work done before a 500)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from core.config import Settings
from core.db import make_engine, session_scope, upgrade, utcnow
from core.errors import Conflict, NotFound
from services import outbox
from services.delivery import Dispatcher, deliver_until_idle
from services.models import DeliveryState, ServiceCenter, WebhookAttempt, WebhookEvent
from services.webhooks import WebhookVerificationError, new_secret, verify

SLOW_S = 0.6  # twice the client's timeout below
FAILED_BODY = b"receiver failed"
EXPECTED_ERROR = {
    "http_500": "http_500",
    "http_503": "http_503",
    "process_then_500": "http_500",
    "slow": "timeout",
}
"""What the delivery log must say about each failing answer of the receiver."""


def fast(settings: Settings, **overrides: Any) -> Settings:
    """Delivery settings scaled down so retries take milliseconds."""
    values: dict[str, Any] = {
        "webhook_timeout_s": 0.3,
        "webhook_backoff_base_s": 0.02,
        "webhook_backoff_max_s": 0.2,
        "webhook_poll_s": 0.05,
        "webhook_concurrency": 8,
        "webhook_max_attempts": 20,
        **overrides,
    }
    return settings.model_copy(update=values)


# --- the receiver -------------------------------------------------------------------------


@dataclass
class Request:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    behaviour: str
    received_at: float


@dataclass
class Receiver:
    """What a well-behaved receiver does (verify, deduplicate) with scripted failures.

    ``behaviour(n)`` answers request number ``n`` with one of: ``ok`` (process, 204),
    ``http_500``/``http_503`` (refuse before processing), ``slow`` (process after SLOW_S, when
    the client has given up) and ``process_then_500`` (process, then fail: the sender retries
    what was already done)."""

    url: str = ""
    secrets: list[str] = field(default_factory=list)
    behaviour: Callable[[int], str] = lambda n: "ok"
    delay_s: float = 0.0
    requests: list[Request] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        try:
            webhook_id = verify(self.secrets, headers, body)
        except WebhookVerificationError as error:
            with self.lock:
                self.refused.append(error.reason)
            return 400, error.reason.encode()
        with self.lock:
            behaviour = self.behaviour(len(self.requests))
            self.requests.append(Request(webhook_id, headers, body, behaviour, time.time()))
        if behaviour in ("http_500", "http_503"):
            return int(behaviour[-3:]), FAILED_BODY
        time.sleep(SLOW_S if behaviour == "slow" else self.delay_s)
        self.process(webhook_id)
        return (500, FAILED_BODY) if behaviour == "process_then_500" else (204, b"")

    def process(self, webhook_id: str) -> None:
        with self.lock:
            if webhook_id in self.processed:
                self.duplicates += 1
            else:
                self.processed.append(webhook_id)
                self.lock.notify_all()

    def wait_processed(self, count: int, timeout_s: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: len(self.processed) >= count, timeout_s)

    def requests_for(self, webhook_id: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.webhook_id == webhook_id]


def flaky(seed: int) -> Callable[[int], str]:
    """Every failure mode early on (so each one is certain to happen), then a seeded mix."""
    rng = random.Random(seed)
    forced = ["process_then_500", "slow", "http_500", "http_503", "process_then_500"]
    modes = ["ok", "http_500", "http_503", "slow", "process_then_500"]
    weights = [0.6, 0.12, 0.1, 0.06, 0.12]
    return lambda n: forced[n] if n < len(forced) else rng.choices(modes, weights)[0]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status, answer = receiver.handle(dict(self.headers.items()), body)
            try:
                self.send_response(status)
                if status != 204:
                    self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # a slow answer: the client hung up long ago

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops simultaneous connects (seen as timeouts)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = _Server(("127.0.0.1", 0), _handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/fleet"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


# --- database helpers ---------------------------------------------------------------------


def make_center(
    engine: Engine,
    url: str | None,
    *,
    secret: str | None = None,
    active: bool = True,
    **fields: Any,
) -> ServiceCenter:
    center = ServiceCenter(
        code=f"t-{uuid.uuid4().hex[:12]}",
        name="Test Garage",
        latitude=48.14,
        longitude=11.58,
        time_zone="Europe/Berlin",
        capabilities=["general"],
        bays=2,
        active=active,
        webhook_url=url,
        webhook_secret=secret or new_secret(),
        **fields,
    )
    with session_scope(engine) as session:
        session.add(center)
    return center


def enqueue_events(engine: Engine, center: ServiceCenter, count: int) -> list[uuid.UUID]:
    start = utcnow()
    with session_scope(engine) as session:
        events = [
            outbox.enqueue(
                session,
                center,
                event_type="booking.proposed",
                data={"booking_id": uuid.uuid4(), "n": n},
                booking_id=uuid.uuid4(),
                now=start + timedelta(microseconds=n),  # a strict order, oldest first
            )
            for n in range(count)
        ]
        return [event.id for event in events]


def load(engine: Engine, event_id: uuid.UUID) -> tuple[WebhookEvent, list[WebhookAttempt]]:
    with session_scope(engine) as session:
        found = outbox.get_event_with_attempts(session, event_id)
    assert found is not None
    return found


def update_center(engine: Engine, center: ServiceCenter, **values: Any) -> None:
    with session_scope(engine) as session:
        stored = session.get(ServiceCenter, center.id)
        assert stored is not None
        for name, value in values.items():
            setattr(stored, name, value)
        session.add(stored)


# --- delivery -----------------------------------------------------------------------------


async def test_every_event_reaches_a_flaky_receiver_once_signed_and_after_backoff(
    db_settings: Settings,
    engine: Engine,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = fast(db_settings)
    center = make_center(engine, receiver.url)
    receiver.secrets = [center.webhook_secret or ""]
    receiver.behaviour = flaky(seed=7)
    event_ids = enqueue_events(engine, center, 50)

    scheduled: dict[tuple[uuid.UUID, int], datetime] = {}
    record_attempt = outbox.record_attempt

    def spy(session: Any, event_id: uuid.UUID, result: outbox.AttemptResult, **kw: Any) -> bool:
        if kw["next_attempt_at"] is not None:
            scheduled[(event_id, result.number)] = kw["next_attempt_at"]
        return record_attempt(session, event_id, result, **kw)

    monkeypatch.setattr(outbox, "record_attempt", spy)
    stats = await deliver_until_idle(settings, engine, timeout_s=60, center_ids=[center.id])

    assert (stats.pending, stats.dead, stats.delivered) == (0, 0, 50)
    assert receiver.refused == []
    assert sorted(receiver.processed) == sorted(str(i) for i in event_ids)
    assert receiver.duplicates >= 2  # the two forced process_then_500 answers at least
    assert {r.behaviour for r in receiver.requests} >= {
        "ok",
        "slow",
        "http_500",
        "http_503",
        "process_then_500",
    }
    assert all(
        r.headers["content-type"] == "application/json"
        and r.headers["user-agent"] == "fleet-webhooks/1"
        for r in receiver.requests
    )

    errors: Counter[str] = Counter()
    for event_id in event_ids:
        event, attempts = load(engine, event_id)
        assert event.delivery_state == DeliveryState.delivered
        assert (event.attempts, event.last_error, event.leased_until) == (len(attempts), None, None)
        assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
        # The log is the truth: one row per request the receiver saw, in order.
        seen = receiver.requests_for(str(event_id))
        assert len(seen) == len(attempts)
        *failures, success = attempts
        assert success.error is None and success.status_code == 204
        for failure, request in zip(failures, seen, strict=False):
            errors[failure.error or ""] += 1
            expected = EXPECTED_ERROR[request.behaviour]
            assert failure.error == expected
            if failure.error != "timeout":
                assert failure.status_code == int(expected[-3:])
                assert failure.response_excerpt == FAILED_BODY.decode()
        for before, after in zip(attempts, attempts[1:], strict=False):
            due = scheduled[(event_id, before.attempt)]
            assert after.started_at >= due  # never retried before its time
            finished = before.started_at + timedelta(milliseconds=before.duration_ms)
            step = min(0.2, 0.02 * 2 ** (before.attempt - 1))
            assert (due - finished).total_seconds() >= outbox.BACKOFF_FLOOR * step - 0.005
    assert set(errors) == {"timeout", "http_500", "http_503"}


async def test_a_captured_delivery_replayed_ten_minutes_later_is_refused_as_stale(
    db_settings: Settings, engine: Engine, receiver: Receiver
) -> None:
    center = make_center(engine, receiver.url)
    receiver.secrets = [center.webhook_secret or ""]
    (event_id,) = enqueue_events(engine, center, 1)
    await deliver_until_idle(fast(db_settings), engine, timeout_s=10, center_ids=[center.id])

    (captured,) = receiver.requests_for(str(event_id))
    assert verify(receiver.secrets, captured.headers, captured.body) == str(event_id)
    with pytest.raises(WebhookVerificationError) as refused:
        verify(receiver.secrets, captured.headers, captured.body, now=captured.received_at + 600)
    assert refused.value.reason == "stale"


async def test_each_retry_is_signed_at_its_own_time_under_the_same_id(
    db_settings: Settings, engine: Engine, receiver: Receiver
) -> None:
    center = make_center(engine, receiver.url)
    receiver.secrets = [center.webhook_secret or ""]
    receiver.behaviour = lambda n: "http_503" if n == 0 else "ok"
    (event_id,) = enqueue_events(engine, center, 1)
    offset = timedelta()

    def clock() -> datetime:
        return utcnow() + offset

    async with Dispatcher(fast(db_settings), engine, clock=clock, center_ids=[center.id]) as d:
        assert await d.run_once() == 1
        offset = timedelta(minutes=2)  # the retry is due long before that
        assert await d.run_once() == 1

    first, second = receiver.requests_for(str(event_id))
    stamps = [int(r.headers["webhook-timestamp"]) for r in (first, second)]
    assert 119 <= stamps[1] - stamps[0] <= 121
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    assert load(engine, event_id)[0].delivery_state == DeliveryState.delivered


async def test_during_a_rotation_either_secret_verifies_and_afterwards_only_the_new(
    db_settings: Settings, engine: Engine, receiver: Receiver
) -> None:
    old, new = new_secret(), new_secret()
    center = make_center(
        engine,
        receiver.url,
        secret=new,
        webhook_previous_secret=old,
        webhook_previous_until=utcnow() + timedelta(hours=1),
    )
    receiver.secrets = [new, old]
    settings = fast(db_settings)
    (during,) = enqueue_events(engine, center, 1)
    await deliver_until_idle(settings, engine, timeout_s=10, center_ids=[center.id])
    update_center(engine, center, webhook_previous_until=utcnow() - timedelta(seconds=1))
    (after,) = enqueue_events(engine, center, 1)
    await deliver_until_idle(settings, engine, timeout_s=10, center_ids=[center.id])

    (signed_during,) = receiver.requests_for(str(during))
    for secret in (old, new):
        assert verify([secret], signed_during.headers, signed_during.body) == str(during)
    (signed_after,) = receiver.requests_for(str(after))
    assert verify([new], signed_after.headers, signed_after.body) == str(after)
    with pytest.raises(WebhookVerificationError) as refused:
        verify([old], signed_after.headers, signed_after.body)
    assert refused.value.reason == "bad_signature"


async def test_an_event_is_dead_after_max_attempts_and_a_replay_delivers_it_same_id(
    db_settings: Settings, engine: Engine, receiver: Receiver
) -> None:
    settings = fast(db_settings, webhook_max_attempts=3)
    center = make_center(engine, receiver.url)
    receiver.secrets = [center.webhook_secret or ""]
    receiver.behaviour = lambda n: "http_500"
    (event_id,) = enqueue_events(engine, center, 1)

    stats = await deliver_until_idle(settings, engine, timeout_s=10, center_ids=[center.id])
    assert (stats.attempts, stats.dead, stats.pending) == (3, 1, 0)
    event, attempts = load(engine, event_id)
    assert (event.delivery_state, event.attempts, event.last_error) == ("dead", 3, "http_500")
    assert event.next_attempt_at is None
    assert [(a.attempt, a.error) for a in attempts] == [(n, "http_500") for n in (1, 2, 3)]
    assert receiver.processed == []

    receiver.behaviour = lambda n: "ok"
    with session_scope(engine) as session:
        replayed = outbox.replay(session, event_id, utcnow())
        assert (replayed.delivery_state, replayed.attempts) == ("pending", 0)
    stats = await deliver_until_idle(settings, engine, timeout_s=10, center_ids=[center.id])

    assert (stats.delivered, stats.pending) == (1, 0)
    event, attempts = load(engine, event_id)
    assert event.delivery_state == DeliveryState.delivered and event.delivered_at is not None
    assert [(a.attempt, a.status_code) for a in attempts] == [
        (1, 500),
        (2, 500),
        (3, 500),
        (1, 204),
    ]
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(event_id)}
    assert receiver.processed == [str(event_id)]


async def test_two_dispatchers_never_deliver_one_event_twice(
    db_settings: Settings, engine: Engine, receiver: Receiver
) -> None:
    settings = fast(db_settings, webhook_concurrency=4)
    center = make_center(engine, receiver.url)
    receiver.secrets = [center.webhook_secret or ""]
    receiver.delay_s = 0.02  # keeps both dispatchers' batches in flight at once
    event_ids = enqueue_events(engine, center, 40)

    first, second = await asyncio.gather(
        *(
            deliver_until_idle(settings, engine, timeout_s=30, center_ids=[center.id])
            for _ in range(2)
        )
    )

    assert first.attempts > 0 and second.attempts > 0
    assert first.delivered + second.delivered == 40
    assert first.superseded == second.superseded == 0
    assert receiver.duplicates == 0
    assert sorted(receiver.processed) == sorted(str(i) for i in event_ids)
    successes = Counter[uuid.UUID]()
    for event_id in event_ids:
        _, attempts = load(engine, event_id)
        successes[event_id] = sum(1 for a in attempts if a.error is None)
    assert set(successes.values()) == {1}


async def test_run_delivers_until_stopped_and_then_exits(
    db_settings: Settings,
    engine: Engine,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    center = make_center(engine, receiver.url)
    receiver.secrets = [center.webhook_secret or ""]
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="services.delivery")
    async with Dispatcher(fast(db_settings), engine, center_ids=[center.id]) as dispatcher:
        task = asyncio.create_task(dispatcher.run(stop))
        await asyncio.sleep(0.1)  # idle: nothing is due yet
        (event_id,) = enqueue_events(engine, center, 1)
        assert await asyncio.to_thread(receiver.wait_processed, 1, 5)
        stop.set()
        await asyncio.wait_for(task, timeout=2)

    assert receiver.processed == [str(event_id)]
    assert dispatcher.stats.delivered == 1
    assert "webhook dispatcher stopped" in caplog.text


def test_the_dispatcher_command_delivers_and_stops_on_sigterm(
    tmp_path: Path, receiver: Receiver
) -> None:
    # Its own SQLite database: a dispatcher for all centers must not touch other tests' events.
    url = f"sqlite:///{tmp_path / 'dispatch.db'}"
    settings = Settings(database_url=url, data_dir=tmp_path, environment="test")
    upgrade(settings)
    engine = make_engine(settings)
    try:
        center = make_center(engine, receiver.url)
        receiver.secrets = [center.webhook_secret or ""]
        (event_id,) = enqueue_events(engine, center, 1)
        env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
        env |= {"FLEET_DATABASE_URL": url, "FLEET_DATA_DIR": str(tmp_path)}
        env |= {"FLEET_ENVIRONMENT": "test", "FLEET_WEBHOOK_POLL_S": "0.05"}
        script = (
            "import logging; logging.basicConfig(level=logging.INFO);"
            "from core.config import Settings; from services.delivery import run_dispatcher;"
            "run_dispatcher(Settings())"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            assert receiver.wait_processed(1, 15)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, stderr
        assert receiver.processed == [str(event_id)]
        assert "webhook dispatcher stopped" in stderr
        assert load(engine, event_id)[0].delivery_state == DeliveryState.delivered
    finally:
        engine.dispose()


async def test_connection_refused_is_a_failed_attempt_named_connect_error(
    db_settings: Settings, engine: Engine
) -> None:
    center = make_center(engine, f"http://127.0.0.1:{closed_port()}/hooks")
    (event_id,) = enqueue_events(engine, center, 1)
    async with Dispatcher(fast(db_settings), engine, center_ids=[center.id]) as dispatcher:
        assert await dispatcher.run_once() == 1
    event, (attempt,) = load(engine, event_id)
    assert (event.delivery_state, event.attempts, event.last_error) == (
        "pending",
        1,
        "connect_error",
    )
    assert (attempt.error, attempt.status_code) == ("connect_error", None)
    assert event.next_attempt_at is not None and event.next_attempt_at > attempt.started_at


# --- the outbox ---------------------------------------------------------------------------


def test_an_event_for_a_center_without_endpoint_is_only_logged_and_never_claimed(
    engine: Engine,
) -> None:
    no_url = make_center(engine, None)
    inactive = make_center(engine, "http://127.0.0.1:9/hooks", active=False)
    (logged_only,) = enqueue_events(engine, no_url, 1)
    (for_inactive,) = enqueue_events(engine, inactive, 1)
    later = utcnow() + timedelta(minutes=1)

    with session_scope(engine) as session:
        assert outbox.claim_due(session, later, 10, 60, center_ids=[no_url.id, inactive.id]) == []
    for event_id in (logged_only, for_inactive):
        event, attempts = load(engine, event_id)
        assert (event.delivery_state, event.next_attempt_at, attempts) == ("no_endpoint", None, [])
    with session_scope(engine) as session, pytest.raises(Conflict):
        outbox.replay(session, logged_only, utcnow())


def test_an_endpoint_removed_after_enqueue_makes_the_event_no_endpoint_until_replayed(
    engine: Engine,
) -> None:
    center = make_center(engine, "http://127.0.0.1:9/hooks")
    (event_id,) = enqueue_events(engine, center, 1)
    update_center(engine, center, webhook_url=None)
    with session_scope(engine) as session:
        assert outbox.claim_due(session, utcnow(), 10, 60, center_ids=[center.id]) == []
    assert load(engine, event_id)[0].delivery_state == DeliveryState.no_endpoint

    update_center(engine, center, webhook_url="http://127.0.0.1:9/new-hooks")
    with session_scope(engine) as session:
        outbox.replay(session, event_id, utcnow())
    with session_scope(engine) as session:
        claimed = outbox.claim_due(session, utcnow(), 10, 60, center_ids=[center.id])
    assert [(e.id, c.webhook_url) for e, c in claimed] == [
        (event_id, "http://127.0.0.1:9/new-hooks")
    ]


def test_a_claim_is_leased_and_an_expired_lease_is_claimed_again(engine: Engine) -> None:
    center = make_center(engine, "http://127.0.0.1:9/hooks")
    event_ids = enqueue_events(engine, center, 3)
    now = utcnow() + timedelta(seconds=1)
    with session_scope(engine) as session:
        first = outbox.claim_due(session, now, 2, 60, center_ids=[center.id])
    with session_scope(engine) as session:
        rest = outbox.claim_due(session, now, 10, 60, center_ids=[center.id])
    with session_scope(engine) as session:
        assert outbox.claim_due(session, now, 10, 60, center_ids=[center.id]) == []
    assert [e.id for e, _ in first + rest] == event_ids  # oldest first, each once
    assert all(e.leased_until == now + timedelta(seconds=60) for e, _ in first)

    # The dispatcher holding them died: after the lease they are due again.
    with session_scope(engine) as session:
        again = outbox.claim_due(
            session, now + timedelta(seconds=61), 10, 60, center_ids=[center.id]
        )
    assert sorted(e.id for e, _ in again) == sorted(event_ids)


def test_an_attempt_is_applied_once_even_if_two_dispatchers_report_it(engine: Engine) -> None:
    center = make_center(engine, "http://127.0.0.1:9/hooks")
    (event_id,) = enqueue_events(engine, center, 1)
    result = outbox.AttemptResult(
        number=1,
        url="http://127.0.0.1:9/hooks",
        started_at=utcnow(),
        duration_ms=12.5,
        status_code=204,
    )
    with session_scope(engine) as session:
        assert outbox.record_attempt(
            session, event_id, result, delivered=True, next_attempt_at=None, dead=False
        )
    late_failure = outbox.AttemptResult(
        number=1, url=result.url, started_at=utcnow(), duration_ms=300, error="timeout"
    )
    with session_scope(engine) as session:
        assert not outbox.record_attempt(
            session, event_id, late_failure, delivered=False, next_attempt_at=utcnow(), dead=False
        )
    event, attempts = load(engine, event_id)
    assert (event.delivery_state, event.attempts, event.last_error) == ("delivered", 1, None)
    assert event.delivered_at == result.started_at + timedelta(milliseconds=12.5)
    assert [a.error for a in attempts] == [None, "timeout"]  # both requests were really sent


def test_enqueue_writes_a_standard_webhooks_payload_and_lists_newest_first(
    engine: Engine,
) -> None:
    center = make_center(engine, "http://127.0.0.1:9/hooks")
    booking_id = uuid.uuid4()
    with session_scope(engine) as session:
        for n, event_type in enumerate(["booking.proposed", "booking.cancelled"]):
            outbox.enqueue(
                session,
                center,
                event_type=event_type,
                data={"booking_id": booking_id, "n": n},
                booking_id=booking_id,
                now=utcnow() + timedelta(seconds=n),
            )
    with session_scope(engine) as session:
        listed = outbox.list_events(session, booking_id=booking_id)
        pending = outbox.list_events(session, center_id=center.id, state=DeliveryState.pending)
        dead = outbox.list_events(session, center_id=center.id, state=DeliveryState.dead)
    assert [e.type for e in listed] == ["booking.cancelled", "booking.proposed"]
    assert [e.id for e in pending] == [e.id for e in listed] and dead == []
    payload = listed[1].payload
    assert payload["type"] == "booking.proposed"
    assert payload["data"] == {"booking_id": str(booking_id), "n": 0}
    assert payload["timestamp"].endswith("Z")
    assert datetime.fromisoformat(payload["timestamp"]) == listed[1].created_at
    with session_scope(engine) as session, pytest.raises(NotFound):
        outbox.replay(session, uuid.uuid4(), utcnow())
    with session_scope(engine) as session:
        assert outbox.get_event_with_attempts(session, uuid.uuid4()) is None


# --- rules --------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_full_jitter_between_a_floor_and_the_cap() -> None:
    rng = random.Random(1)
    for attempt in range(1, 14):
        step = min(60.0, 0.5 * 2 ** (attempt - 1))
        draws = [outbox.backoff_s(attempt, 0.5, 60.0, rng) for _ in range(2000)]
        assert min(draws) >= outbox.BACKOFF_FLOOR * step and max(draws) <= step
        assert 0.52 * step < sum(draws) / len(draws) < 0.58 * step  # uniform over [0.1, 1]
        assert max(draws) > 0.98 * step and min(draws) < 0.12 * step
    assert outbox.backoff_s(10_000, 0.5, 60.0, rng) <= 60.0
    with pytest.raises(ValueError):
        outbox.backoff_s(0, 0.5, 60.0, rng)


def test_the_previous_secret_signs_only_until_its_overlap_ends() -> None:
    now = utcnow()
    center = ServiceCenter(
        code="x",
        name="x",
        latitude=0,
        longitude=0,
        time_zone="UTC",
        bays=1,
        webhook_url="https://example.test/hooks",
        webhook_secret="new",
        webhook_previous_secret="old",
        webhook_previous_until=now + timedelta(seconds=1),
    )
    assert outbox.signing_secrets(center, now) == ["new", "old"]
    assert outbox.signing_secrets(center, now + timedelta(seconds=1)) == ["new"]
    center.webhook_previous_until = None
    assert outbox.signing_secrets(center, now) == ["new"]


def closed_port() -> int:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
