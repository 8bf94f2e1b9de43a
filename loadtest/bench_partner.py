"""Partner API benchmark: insurer score reads per second, next to a bare FastAPI endpoint.

    .venv/bin/python -m loadtest.bench_partner [--subjects 200] [--seconds 15]
        [--warmup-seconds 3] [--concurrency 16] [--json-only]

Prints ONE JSON line on stdout (progress on stderr); ``docs/performance.md`` explains it.

1. Set-up, in a temp dir: a migrated SQLite database with ``--subjects`` registered BEVs, each
   with a stored 30-day ``UbiScore`` computed by the real scorer (``ubi.scoring.score_period``
   over eight to twelve commutes with a few harsh events, stored as the worker stores it:
   ``ubi.service.score_row`` + ``ubi.repository.upsert_scores``), one owner linked to all of
   them, an insurer principal with an active ``ubi`` consent for every subject and its bearer
   token. The insurer's pseudonyms are computed and stored with ``ubi.pseudonyms``.
2. Ours: one ``fleet api`` process (uvicorn, same flags as ``loadtest.bench_ingest``) on that
   database, with a local Kafka broker for its readiness (or ``--bootstrap``). A closed loop of
   ``--concurrency`` keep-alive connections requests ``GET /v1/partner/ubi/scores/{pseudonym}``
   for a random subject with the insurer's token: ``--warmup-seconds`` untimed, then
   ``--seconds`` timed. Only 200 answers carrying ``X-Fleet-Signature`` count; latencies are
   theirs. Then a shorter run of the list endpoint (``?limit=50``).
3. Bare: ``loadtest/bare_app.py``'s ``GET /v1/partner/ubi/scores/{subject}`` (a fixed body of
   the same size and a fixed signature header; no auth, no database), served by uvicorn the
   same way and driven by the same client. ``ratio`` = ours requests/s / bare requests/s.
4. Checks: a response from the load and a fresh one verify against ``GET /v1/partner/keys``
   (``ubi.signing.verify``); the audit log holds one ``partner.read`` event per partner request
   answered (all 200s counted, warm-up and list run included) and its hash chain verifies.

The client is the raw asyncio HTTP/1.1 approach of ``loadtest/loadgen.py`` (pre-encoded
requests, tens of microseconds of CPU each), run in this process on uvloop. Loopback only;
every phase has a timeout, ``--timeout`` bounds the whole run, and the broker and servers are
stopped at exit (``finally``, ``atexit``, SIGTERM; ``PR_SET_PDEATHSIG`` on the servers).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx

from core.config import Settings
from core.localkafka import free_ports
from loadtest import loadgen
from loadtest.bench_ingest import (
    REPO_ROOT,
    Cleanup,
    Server,
    bench_kafka,
    bench_settings,
    broker_pid,
    console,
    machine_record,
    say,
    wait_quiet,
)

ITEM_PATH = "/v1/partner/ubi/scores"
SIGNATURE = "x-fleet-signature"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
T = TypeVar("T")


# ---------------------------------------------------------------------------------- set-up


def period_row(vin: str, end_ms: int, period_days: int, rng: random.Random) -> dict[str, Any]:
    """A stored ``ubi_score`` row as the UBI worker writes it: the real scorer over eight to
    twelve 25-45 minute commutes in the period, with a few harsh events."""
    from ubi.events import DrivingEvent, EventType
    from ubi.scoring import score_period
    from ubi.service import score_row
    from ubi.trips import Trip

    start_ms = end_ms - period_days * DAY_MS
    trips: list[Trip] = []
    events: list[DrivingEvent] = []
    kinds = (EventType.HARSH_BRAKING, EventType.HARSH_ACCELERATION, EventType.HARSH_CORNERING)
    for n in range(rng.randint(8, 12)):
        begin = start_ms + (n * 2 + 1) * DAY_MS + rng.randint(6, 20) * HOUR_MS
        duration_s = rng.uniform(1500.0, 2700.0)
        moving_s = duration_s * rng.uniform(0.85, 0.95)
        night_s = duration_s * rng.uniform(0.0, 0.3) if rng.random() < 0.2 else 0.0
        speeding_s = moving_s * rng.uniform(0.0, 0.08)
        trip = Trip(
            vin=vin,
            trip_id=f"{vin}:{begin}",
            start_ms=begin,
            end_ms=begin + int(duration_s * 1000),
            start_local="",
            end_local="",
            time_zone="Europe/Berlin",
            distance_m=moving_s * rng.uniform(11.0, 16.0),
            distance_source="odometer",
            duration_s=duration_s,
            moving_s=moving_s,
            idle_s=duration_s - moving_s,
            night_s=night_s,
            speeding_s=speeding_s,
            night_share=night_s / duration_s,
            speeding_share=speeding_s / moving_s,
            speed_limit_source="posted",
            samples=int(duration_s),
        )
        trips.append(trip)
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            at = begin + rng.randint(60_000, int(duration_s * 1000) - 60_000)
            events.append(DrivingEvent(
                vin, rng.choice(kinds), at, at + rng.randint(800, 2500),
                rng.uniform(3.6, 6.0), rng.choice((1, 1, 2, 3)), "accelerometer",
            ))
    excluded = frozenset({trips[-1].trip_id}) if rng.random() < 0.25 else frozenset()
    score = score_period(vin, trips, events, period_start_ms=start_ms, period_end_ms=end_ms,
                         excluded_trip_ids=excluded)
    return score_row(score, period_days)


@dataclass
class Subjects:
    insurer: str
    insurer_id: Any
    token: str
    pseudonyms: list[str]
    vins: int


def set_up(settings: Settings, count: int, seed: int) -> Subjects:
    """Vehicles, scores, owner, insurer, consents and stored pseudonyms, in the database."""
    from core.auth.service import create_principal_with_credential
    from core.db import make_engine, session_scope, utcnow
    from core.vehicles.models import Powertrain, VehicleIn
    from core.vehicles.service import bulk_register_vehicles
    from loadtest.messages import fleet_vins
    from ubi import access, consent, pseudonyms
    from ubi.models import Purpose
    from ubi.repository import upsert_scores

    rng = random.Random(seed)
    vins = fleet_vins(count, seed=seed)
    end_ms = int(utcnow().timestamp() * 1000) - HOUR_MS
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            bulk_register_vehicles(session, [
                VehicleIn(vin=vin, model="Bench EV", model_year=2023, region="EU",
                          time_zone="Europe/Berlin", powertrain=Powertrain.bev,
                          tags=["bench"])
                for vin in vins
            ])
            upsert_scores(session, [
                period_row(vin, end_ms, settings.ubi_period_days, rng) for vin in vins
            ])
            owner, _ = create_principal_with_credential(session, "bench-owner", "owner")
            insurer, token = create_principal_with_credential(session, "bench-insurer",
                                                              "insurer")
            insurer_id, owner_name = insurer.id, owner.name
        with session_scope(engine) as session:
            expires = utcnow() + timedelta(days=90)
            for vin in vins:
                access.link_owner(session, vin, owner_name, actor="bench")
                consent.grant(session, vin, insurer_id, Purpose.ubi, expires,
                              granted_by=owner_name)
        with session_scope(engine) as session:
            mapping = pseudonyms.pseudonyms_for(session, insurer_id, vins)
    finally:
        engine.dispose()
    return Subjects("bench-insurer", insurer_id, token, [mapping[v] for v in vins], len(vins))


def partner_reads(settings: Settings) -> dict[str, Any]:
    """``partner.read`` events in the audit log, and whether the whole chain verifies."""
    from sqlalchemy import func
    from sqlmodel import select

    from core.audit import AuditEvent, verify_chain
    from core.db import make_engine, session_scope

    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            reads = session.exec(
                select(func.count()).select_from(AuditEvent)
                .where(AuditEvent.action == "partner.read")
            ).one()
            chain = verify_chain(session)
    finally:
        engine.dispose()
    return {"partner_read_events": int(reads), "chain_ok": chain.ok, "events": chain.events}


# ---------------------------------------------------------------------------------- client


class GetConnection:
    """One keep-alive HTTP/1.1 connection sending pre-encoded GET requests (the raw client of
    ``loadtest/loadgen.py``, for GET); reconnects after an error or ``Connection: close``."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, request: bytes) -> tuple[str, str | None, bytes]:
        """(status or error name, signature header, body)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._get(request)
        except TimeoutError:
            await self.close()
            return "timeout", None, b""
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            await self.close()
            return type(exc).__name__, None, b""

    async def _get(self, request: bytes) -> tuple[str, str | None, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)[1]
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                parts.append((await self.reader.readexactly(size + 2))[:size])
                if size == 0:
                    break
            body = b"".join(parts)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers.get(SIGNATURE), body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def encode_requests(base_url: str, paths: list[str], token: str) -> list[bytes]:
    host = base_url.removeprefix("http://")
    return [(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
             "Accept: application/json\r\n\r\n").encode() for path in paths]


@dataclass
class Tally:
    """Every answer of one server across phases (warm-up included): what the audit log of the
    API must account for."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)


class ClosedLoop:
    def __init__(self, requests: list[bytes], seed: int, tally: Tally) -> None:
        self.requests = requests
        self.rng = random.Random(seed)
        self.tally = tally
        self.statuses: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self.sample: tuple[bytes, str] | None = None
        self.body_bytes = 0
        self.record = False

    async def worker(self, conn: GetConnection, deadline: float) -> None:
        while time.perf_counter() < deadline:
            request = self.rng.choice(self.requests)
            started = time.perf_counter()
            status, signature, body = await conn.get(request)
            elapsed = time.perf_counter() - started
            self.tally.statuses[status] += 1
            key = status if status != "200" or signature else "200-unsigned"
            self.statuses[key] += 1
            if key == "200" and signature is not None:
                self.sample = (body, signature)
                self.body_bytes = len(body)
                if self.record:
                    self.latencies.append(elapsed)

    async def phase(self, conns: list[GetConnection], seconds: float) -> float:
        start = time.perf_counter()
        deadline = start + seconds
        async with asyncio.timeout(seconds + 60.0):
            await asyncio.gather(*(self.worker(c, deadline) for c in conns))
        return time.perf_counter() - start


async def closed_loop(
    base_url: str,
    requests: list[bytes],
    *,
    concurrency: int,
    warmup_s: float,
    seconds: float,
    seed: int,
    tally: Tally,
    watch: dict[str, int],
) -> dict[str, Any]:
    """``concurrency`` connections, each sending its next request when the previous answer
    is in; warm-up, then the timed window."""
    port = int(base_url.rsplit(":", 1)[1])
    conns = [GetConnection("127.0.0.1", port, 30.0) for _ in range(concurrency)]
    run = ClosedLoop(requests, seed, tally)
    try:
        if warmup_s > 0:
            await run.phase(conns, warmup_s)
        warmup = dict(run.statuses)
        run.statuses.clear()
        run.record = True
        window = loadgen.CpuWindow({**watch, "client": os.getpid()})
        elapsed = await run.phase(conns, seconds)
        cpu = window.stop()
    finally:
        for conn in conns:
            await conn.close()
    ok = run.statuses.get("200", 0)
    latencies = sorted(run.latencies)

    def ms(q: float) -> float | None:
        value = loadgen._percentile(latencies, q)
        return None if value is None else round(value * 1000.0, 2)

    return {
        "seconds": round(elapsed, 3),
        "requests": ok,
        "requests_per_s": round(ok / elapsed, 1),
        "p50_ms": ms(0.50),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "max_ms": round(latencies[-1] * 1000.0, 2) if latencies else None,
        "errors": sum(n for status, n in run.statuses.items() if status != "200"),
        "errors_by_status": {s: n for s, n in sorted(run.statuses.items()) if s != "200"},
        "body_bytes": run.body_bytes,
        "warmup": warmup,
        **cpu,
        "_sample": run.sample,
    }


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop if available; a ``--timeout`` during it cancels it (see
    :func:`_on_signal`) and comes out as :class:`BenchTimeout`."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro)
    except asyncio.CancelledError:
        if _timed_out:
            raise BenchTimeout("the benchmark exceeded --timeout") from None
        raise


# ----------------------------------------------------------------------------------- phases


def serve(server: Server, cleanup: Cleanup) -> None:
    cleanup.push(f"server {server.name}", server.stop)
    server.start()
    server.wait_ready(90.0)
    say(f"{server.name}: ready on {server.url}")


def verify_signatures(url: str, token: str, samples: list[tuple[bytes, str]],
                      pseudonym: str) -> dict[str, Any]:
    """The load's last signed answer, and a fresh item and list answer, verify with the keys
    the API publishes."""
    from ubi import signing

    with httpx.Client(base_url=url, timeout=10.0) as client:
        keys = client.get("/v1/partner/keys")
        keys.raise_for_status()
        jwks = keys.json()
        headers = {"Authorization": f"Bearer {token}"}
        fresh = [client.get(f"{ITEM_PATH}/{pseudonym}", headers=headers),
                 client.get(ITEM_PATH, params={"limit": 5}, headers=headers)]
    checked = [*samples, *((r.content, r.headers.get(signing.HEADER, "")) for r in fresh)]
    problems = []
    for body, signature in checked:
        try:
            signing.verify(body, signature, jwks)
        except signing.SignatureInvalid as exc:
            problems.append(str(exc))
    statuses = [r.status_code for r in fresh]
    return {"checked": len(checked), "ok": not problems and statuses == [200, 200],
            "fresh_statuses": statuses, "problems": problems[:3], "kid": jwks["keys"][0]["kid"],
            "answers": len(fresh)}


def ours_benchmark(
    settings: Settings, args: argparse.Namespace, tmp: Path, subjects: Subjects,
    watch: dict[str, int], cleanup: Cleanup,
) -> dict[str, Any]:
    env = server_env(settings, tmp)
    port = free_ports(1)[0]
    fleet = Path(sys.executable).with_name("fleet")
    server = Server("api", [str(fleet), "api", "--host", "127.0.0.1", "--port", str(port)],
                    env, port, tmp / "api.log")
    serve(server, cleanup)
    assert server.proc is not None
    watch = {"server": server.proc.pid, **watch}
    tally = Tally()
    try:
        item_requests = encode_requests(
            server.url, [f"{ITEM_PATH}/{p}" for p in subjects.pseudonyms], subjects.token)
        say(f"ours: item endpoint, {args.warmup_seconds:g} s warm-up + {args.seconds:g} s at "
            f"concurrency {args.concurrency}")
        item = run_async(closed_loop(
            server.url, item_requests, concurrency=args.concurrency,
            warmup_s=args.warmup_seconds, seconds=args.seconds, seed=args.seed + 1,
            tally=tally, watch=watch))
        say(f"ours: {item['requests_per_s']:,.0f} requests/s, p99 {item['p99_ms']} ms, "
            f"{item['errors']} errors")
        list_requests = encode_requests(
            server.url, [f"{ITEM_PATH}?limit={args.list_limit}"], subjects.token)
        say(f"ours: list endpoint (limit {args.list_limit}), 1 s warm-up + "
            f"{args.list_seconds:g} s")
        listed = run_async(closed_loop(
            server.url, list_requests, concurrency=args.concurrency, warmup_s=1.0,
            seconds=args.list_seconds, seed=args.seed + 2, tally=tally, watch=watch))
        say(f"ours: list {listed['requests_per_s']:,.0f} requests/s, p99 {listed['p99_ms']} ms")
        samples = [s for s in (item.pop("_sample"), listed.pop("_sample")) if s is not None]
        signatures = verify_signatures(server.url, subjects.token, samples,
                                       subjects.pseudonyms[0])
        for status in signatures.pop("fresh_statuses"):
            tally.statuses[str(status)] += 1
    finally:
        server.stop()
    audit = partner_reads(settings)
    # The handler audits every read it answers: 200, and the subject-level 404 (none expected
    # here). 401/403/422 are refused before it and are not partner reads.
    answered = tally.statuses.get("200", 0) + tally.statuses.get("404", 0)
    ok_total = tally.statuses.get("200", 0)
    return {
        "item": item,
        "list": {"limit": args.list_limit} | {k: listed[k] for k in (
            "seconds", "requests", "requests_per_s", "p50_ms", "p99_ms", "errors",
            "errors_by_status", "body_bytes", "cpu_pct")},
        "signature_verified": signatures["ok"],
        "signatures": signatures,
        "audit": {
            "partner_read_events": audit["partner_read_events"],
            "ok_responses_total": ok_total,
            "answered_total": answered,
            "statuses_total": dict(sorted(tally.statuses.items())),
            "one_event_per_read": audit["partner_read_events"] == answered,
            "chain_ok": audit["chain_ok"],
            "events_in_chain": audit["events"],
        },
    }


def bare_benchmark(
    settings: Settings, args: argparse.Namespace, tmp: Path, subjects: Subjects,
    watch: dict[str, int], cleanup: Cleanup,
) -> dict[str, Any]:
    port = free_ports(1)[0]
    server = Server(
        "bare", [sys.executable, "-m", "uvicorn", "loadtest.bare_app:app", "--host",
                 "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        server_env(settings, tmp), port, tmp / "bare.log")
    serve(server, cleanup)
    assert server.proc is not None
    try:
        requests = encode_requests(
            server.url, [f"{ITEM_PATH}/{p}" for p in subjects.pseudonyms], subjects.token)
        say(f"bare: {args.warmup_seconds:g} s warm-up + {args.seconds:g} s at concurrency "
            f"{args.concurrency}")
        result = run_async(closed_loop(
            server.url, requests, concurrency=args.concurrency, warmup_s=args.warmup_seconds,
            seconds=args.seconds, seed=args.seed + 1, tally=Tally(),
            watch={"server": server.proc.pid, **watch}))
    finally:
        server.stop()
    result.pop("_sample")
    say(f"bare: {result['requests_per_s']:,.0f} requests/s, p99 {result['p99_ms']} ms")
    return result


def server_env(settings: Settings, tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "FLEET_DATA_DIR": str(tmp),
        "DATABASE_URL": settings.sqlalchemy_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("FLEET_DATABASE_URL", None)
    env.pop("FLEET_KAFKA_BOOTSTRAP_SERVERS", None)
    return env


# ------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_partner",
        description="Partner API (insurer score reads) against a bare FastAPI endpoint; "
                    "prints one JSON line.",
    )
    parser.add_argument("--subjects", type=int, default=200,
                        help="consenting vehicles with a stored score (default 200)")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="timed load per server on the item endpoint (default 15)")
    parser.add_argument("--warmup-seconds", type=float, default=3.0,
                        help="untimed load before each measurement (default 3)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="keep-alive connections, one request in flight each (default 16)")
    parser.add_argument("--list-seconds", type=float, default=5.0,
                        help="timed load on the list endpoint (default 5)")
    parser.add_argument("--list-limit", type=int, default=50, help="page size of the list run")
    parser.add_argument("--bootstrap", default=None,
                        help="existing Kafka (default: KAFKA_BOOTSTRAP_SERVERS, else a local one)")
    parser.add_argument("--wait-quiet", type=float, default=30.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the machine to be < 25%% busy "
                             "(default 30; 0 skips)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="hard limit for the whole run in seconds (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if min(args.subjects, args.concurrency, args.list_limit) < 1 or args.seconds <= 0:
        parser.error("--subjects, --concurrency, --list-limit and --seconds must be positive")
    return args


class BenchTimeout(BaseException):
    """``--timeout`` elapsed: not an ``Exception``, so no phase catches it and goes on."""


_timed_out = False


def _on_signal(signum: int, _frame: object) -> None:
    """SIGTERM exits (cleanup runs); ``--timeout`` (SIGALRM) raises :class:`BenchTimeout`, or,
    while an event loop runs (which would swallow an exception from a signal handler), cancels
    its tasks so that :func:`run_async` raises it."""
    global _timed_out
    if signum != signal.SIGALRM:
        raise SystemExit(143)
    _timed_out = True
    loop = asyncio._get_running_loop()
    if loop is None:
        raise BenchTimeout("the benchmark exceeded --timeout")
    for task in asyncio.all_tasks(loop):
        task.cancel()


def guarded(name: str, errors: list[str], fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - report it in the JSON line and go on
        errors.append(f"{name}: {type(exc).__name__}: {exc}")
        say(f"[red]{name} failed:[/] {exc}")
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json_only:
        console.quiet = True
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    cleanup = Cleanup()
    atexit.register(cleanup.run)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "partner_api"}
    errors: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-partner-"))
    if args.keep:
        say(f"keeping {tmp}")
    else:
        cleanup.push("temp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))
    try:
        quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
        loadavg = os.getloadavg()
        base = Settings()
        bootstrap, kafka_version = bench_kafka(args.bootstrap, base, tmp, cleanup)  # readiness
        settings = bench_settings(base, tmp, bootstrap)
        result["machine"] = machine_record(kafka_version, loadavg, quiet)
        from core.db import upgrade

        upgrade(settings)
        say(f"set-up: {args.subjects} vehicles with scores, owner, insurer, consents")
        set_up_started = time.perf_counter()
        subjects = set_up(settings, args.subjects, args.seed)
        result["subjects"] = subjects.vins
        result["setup_s"] = round(time.perf_counter() - set_up_started, 1)
        result["concurrency"] = args.concurrency
        watch = {"broker": pid} if (pid := broker_pid(tmp)) else {}
        ours = guarded("ours", errors,
                       lambda: ours_benchmark(settings, args, tmp, subjects, watch, cleanup))
        bare = guarded("bare", errors,
                       lambda: bare_benchmark(settings, args, tmp, subjects, watch, cleanup))
        result.update(summarize(ours, bare))
    except (Exception, BenchTimeout) as exc:  # noqa: BLE001 - still print the JSON line
        errors.append(f"{type(exc).__name__}: {exc}")
        say(f"[red]benchmark failed:[/] {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        cleanup.run()
    result["duration_s"] = round(time.perf_counter() - started, 1)
    if errors:
        result["errors"] = errors
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if not errors else 1


def summarize(ours: dict[str, Any] | None, bare: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ours is not None:
        item = ours["item"]
        out["item"] = {k: item[k] for k in (
            "seconds", "requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms",
            "errors", "errors_by_status", "body_bytes", "cpu_pct", "others_pct")}
        out["list"] = ours["list"]
        out["signature_verified"] = ours["signature_verified"]
        out["audit"] = ours["audit"]
    if bare is not None:
        out["bare"] = {k: bare[k] for k in (
            "requests_per_s", "p50_ms", "p99_ms", "errors", "body_bytes", "cpu_pct",
            "others_pct")}
    if ours is not None and bare is not None and bare["requests_per_s"]:
        out["ratio"] = round(ours["item"]["requests_per_s"] / bare["requests_per_s"], 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
