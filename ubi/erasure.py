"""Erasure of a vehicle's data ("right to erasure"), and the privacy job that also runs the
location retention purge (``ubi.retention``).

:func:`request_erasure` records a request (``erasure_request``, state ``pending``, due
``erasure_deadline_h`` later; audit ``privacy.erasure_requested``). :func:`process_erasures`
(the privacy job, ``fleet privacy run``, or ``fleet privacy erase VIN --now``) carries out the
pending ones, oldest first:

1. **Archive.** Every Parquet data file holding rows of the VIN (found from the ``vin`` column
   statistics of its footer, then a read of that column) is rewritten without them: to the
   archive's temporary name, then moved over the original, so each file is replaced
   atomically. A file left without rows is replaced by an empty file with the same schema
   rather than deleted, because roll manifests keep naming it and the archive worker's dedup
   reads every file a manifest names. This step is idempotent.
2. **Database, in one transaction:** the vehicle's rows in ``ubi_trip``, ``ubi_event``,
   ``ubi_score``, ``battery_session``, ``battery_health``, ``analytics_state``,
   ``vehicle_status`` and ``pseudonym`` (the mapping from partners' pseudonyms back to the
   VIN) are deleted; its active consents are revoked (``revoked_by="erasure"``); the request
   becomes ``done`` with ``completed_at`` and ``details`` = rows/files removed per store; and
   one audit event ``privacy.erasure_completed`` (subject ``vehicle:<VIN>``, the counts, no
   other personal data) is appended.

A crash between the two steps leaves the request pending, and the next run finishes it. On
PostgreSQL a runner claims a request with ``SELECT ... FOR UPDATE SKIP LOCKED`` and holds the
lock until its transaction commits, so two runners never process the same request.

**Deliberately kept:**

- consent records (revoked, not deleted): the evidence of what was lawfully shared, and when;
- diagnostic data (DTC episodes, alarms, maintenance predictions, the diagnosis and
  predictive-maintenance worker state) and service bookings, notifications and outcomes:
  safety and warranty records; OTA update records (regulatory software-update evidence); the
  vehicle registry entry and its owner links;
- the audit log (append-only and hash-chained; the erasure events name only the VIN);
- the erasure requests themselves, so :func:`erased_before` keeps answering.

**Not reached:** telemetry still in the Kafka topics is bounded by the topics' own retention
(``retention.ms``) and is not rewritten; a consumer group reset before it expires would
re-process it. Data the vehicle sends after the erasure is new data and is processed as
usual. A roll the archive worker is committing at the moment of the erasure may publish rows
of the VIN right after the archive step; the streaming workers, which may still hold state
from samples before the request, drop results older than it (:func:`erased_before`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from sqlalchemy import delete, func, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from core import audit
from core.config import Settings
from core.db import make_engine, session_scope, utcnow, write_lock
from core.errors import ValidationFailed
from core.vehicles.models import VehicleStatus
from core.vin import vin_problem
from ingestion.archive import ParquetArchive
from ubi.models import (
    AnalyticsState,
    BatteryHealthRecord,
    BatterySession,
    Consent,
    ErasureRequest,
    ErasureState,
    Pseudonym,
    UbiEvent,
    UbiScore,
    UbiTrip,
)
from ubi.retention import (
    archive_lock,
    data_files,
    date_partitions,
    file_compression,
    purge_locations,
    replace_file,
)

log = logging.getLogger(__name__)

ACTOR = "privacy"
REQUESTED_ACTION = "privacy.erasure_requested"
COMPLETED_ACTION = "privacy.erasure_completed"
REVOKED_BY = "erasure"

ERASED_TABLES: tuple[type[SQLModel], ...] = (
    UbiTrip,
    UbiEvent,
    UbiScore,
    BatterySession,
    BatteryHealthRecord,
    AnalyticsState,
    VehicleStatus,
    Pseudonym,
)
"""Tables whose rows of an erased vehicle are deleted."""


@dataclass
class ErasureResult:
    request_id: uuid.UUID
    vin: str
    requested_at: datetime
    due_at: datetime
    completed_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    """Why it failed (the request stays pending and the next run retries it)."""

    @property
    def done(self) -> bool:
        return self.completed_at is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": str(self.request_id),
            "vin": self.vin,
            "requested_at": self.requested_at.isoformat(),
            "due_at": self.due_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "counts": dict(self.counts),
            "error": self.error,
        }


# -- requests ------------------------------------------------------------------------------------


def request_erasure(
    session: Session, vin: str, *, requested_by: str, settings: Settings
) -> ErasureRequest:
    """Record an erasure request for ``vin`` (due ``erasure_deadline_h`` from now); while one
    is pending, that one is returned and nothing new is recorded. Does not commit."""
    problem = vin_problem(vin)
    if problem is not None:
        raise ValidationFailed(f"invalid VIN {vin!r}: {problem}")
    _lock_vin(session, vin)
    pending = session.exec(
        select(ErasureRequest)
        .where(ErasureRequest.vin == vin, ErasureRequest.state == ErasureState.pending.value)
        .order_by(col(ErasureRequest.requested_at))
        .execution_options(populate_existing=True)
    ).first()
    if pending is not None:
        return pending
    now = utcnow()
    request = ErasureRequest(
        vin=vin,
        requested_at=now,
        requested_by=requested_by,
        due_at=now + timedelta(hours=settings.erasure_deadline_h),
        state=ErasureState.pending,
    )
    session.add(request)
    session.flush()
    audit.record(
        session,
        actor=requested_by,
        action=REQUESTED_ACTION,
        subject=f"vehicle:{vin}",
        details={"request_id": str(request.id), "due_at": request.due_at.isoformat()},
        at=now,
    )
    return request


def list_requests(
    session: Session, *, vin: str | None = None, state: ErasureState | None = None, limit: int = 100
) -> list[ErasureRequest]:
    """Erasure requests, newest first."""
    query = select(ErasureRequest).order_by(col(ErasureRequest.requested_at).desc()).limit(limit)
    if vin is not None:
        query = query.where(ErasureRequest.vin == vin)
    if state is not None:
        query = query.where(ErasureRequest.state == state.value)
    return list(session.exec(query))


def erased_before(session: Session, vins: Iterable[str]) -> dict[str, datetime]:
    """Per VIN with a completed erasure: the ``requested_at`` of its latest one. Results from
    samples before that moment must not be stored again."""
    wanted = sorted(set(vins))
    found: dict[str, datetime] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.exec(
            select(ErasureRequest.vin, func.max(ErasureRequest.requested_at))
            .where(
                col(ErasureRequest.vin).in_(chunk),
                ErasureRequest.state == ErasureState.done.value,
            )
            .group_by(col(ErasureRequest.vin))
        ).all()
        for vin, requested_at in rows:
            if requested_at is not None:
                found[vin] = _aware(requested_at)
    return found


# -- processing ----------------------------------------------------------------------------------


def process_erasures(
    settings: Settings,
    *,
    now: datetime | None = None,
    only_vin: str | None = None,
    engine: Engine | None = None,
) -> list[ErasureResult]:
    """Carry out every pending erasure request (of ``only_vin`` if given), oldest first, one
    transaction each. A request that fails is logged and reported with ``error`` set; it stays
    pending for the next run, and the others are still processed."""
    own_engine = engine is None
    engine = engine or make_engine(settings)
    results: list[ErasureResult] = []
    attempted: set[uuid.UUID] = set()
    try:
        archive = ParquetArchive(settings.archive_location)
        while True:
            try:
                result = _process_next(engine, archive, now, only_vin, attempted)
            except _Failed as failed:  # logged; it stays pending for the next run
                results.append(failed.result)
                continue
            if result is None:
                break
            results.append(result)
    finally:
        if own_engine:
            engine.dispose()
    return results


class _Failed(Exception):
    def __init__(self, result: ErasureResult) -> None:
        super().__init__(result.error)
        self.result = result


def _process_next(
    engine: Engine,
    archive: ParquetArchive,
    now: datetime | None,
    only_vin: str | None,
    attempted: set[uuid.UUID],
) -> ErasureResult | None:
    """Claim the oldest pending request not attempted yet and carry it out; None when there
    is none. The claim's row lock is held until the transaction commits."""
    result: ErasureResult | None = None
    try:
        with session_scope(engine) as session:
            query = (
                select(ErasureRequest)
                .where(ErasureRequest.state == ErasureState.pending.value)
                .order_by(col(ErasureRequest.requested_at), col(ErasureRequest.id))
                .limit(1)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
            if only_vin is not None:
                query = query.where(ErasureRequest.vin == only_vin)
            if attempted:
                query = query.where(col(ErasureRequest.id).not_in(attempted))
            request = session.exec(query).first()
            if request is None:
                return None
            attempted.add(request.id)
            result = ErasureResult(request.id, request.vin, request.requested_at, request.due_at)
            with archive_lock(engine):
                files, rows = erase_archive(archive, request.vin)
            result.counts = {"archive_files": files, "archive_rows": rows}
            completed = _erase_database(session, request, now or utcnow(), result.counts)
            if completed is None:  # SQLite only: another runner finished it meanwhile
                completed, result.counts = request.completed_at, dict(request.details)
            result.completed_at = completed
    except Exception as exc:
        if result is None:
            raise
        log.exception("erasure of request %s failed", result.request_id)
        result.counts = {}
        result.error = f"{type(exc).__name__}: {exc}"
        raise _Failed(result) from exc
    log.info("erasure request %s done: %s", result.request_id, result.counts)
    return result


def erase_archive(archive: ParquetArchive, vin: str) -> tuple[int, int]:
    """Rewrite every archive file that holds rows of ``vin`` without them; returns (files
    rewritten, rows removed). Idempotent: a second call finds nothing."""
    files = rows = 0
    for _, partition in date_partitions(archive):
        for path in data_files(archive.fs, partition):
            removed = erase_from_file(archive.fs, path, vin)
            if removed:
                files += 1
                rows += removed
    return files, rows


def erase_from_file(fs: pafs.FileSystem, path: str, vin: str) -> int:
    """Remove the rows of ``vin`` from one data file (atomically replaced); returns how many
    there were. A file left empty keeps its schema (manifests still name it)."""
    with fs.open_input_file(path) as source:
        parquet = pq.ParquetFile(source)
        if not _may_hold(parquet.metadata, vin):
            return 0
        vins = parquet.read(columns=["vin"]).column("vin")
        matches = pc.equal(vins, pa.scalar(vin, vins.type))
        count = int(pc.sum(pc.cast(matches, pa.int64())).as_py() or 0)
        if count == 0:
            return 0
        table = parquet.read()
        compression = file_compression(parquet.metadata)
    kept = table.filter(pc.invert(pc.equal(table.column("vin"), pa.scalar(vin, vins.type))))
    replace_file(fs, path, kept, compression)
    return count


def _may_hold(metadata: pq.FileMetaData, vin: str) -> bool:
    """From the footer: can a row group of this file hold ``vin`` (min <= vin <= max)?"""
    for r in range(metadata.num_row_groups):
        group = metadata.row_group(r)
        if group.num_rows == 0:
            continue
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema != "vin":
                continue
            stats = chunk.statistics
            if stats is None or not stats.has_min_max:
                return True
            low, high = _text(stats.min), _text(stats.max)
            if low <= vin <= high:
                return True
            break
        else:
            return True  # no vin column in the footer: read it to be sure
    return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _erase_database(
    session: Session, request: ErasureRequest, now: datetime, counts: dict[str, int]
) -> datetime | None:
    """The database half, in the caller's transaction: returns the completion time, or None
    when the request is no longer pending."""
    write_lock(session)
    session.refresh(request)
    if request.state != ErasureState.pending:
        return None
    vin = request.vin
    for model in ERASED_TABLES:
        table = model.__table__  # type: ignore[attr-defined]
        deleted = session.execute(delete(table).where(table.c.vin == vin))
        counts[str(table.name)] = _rowcount(deleted)
    revoked = session.execute(
        update(Consent)
        .where(
            col(Consent.vin) == vin,
            col(Consent.revoked_at).is_(None),
            col(Consent.expires_at) > now,
        )
        .values(revoked_at=now, revoked_by=REVOKED_BY)
        .execution_options(synchronize_session=False)
    )
    counts["consent_revoked"] = _rowcount(revoked)
    request.state = ErasureState.done
    request.completed_at = now
    request.details = dict(counts)
    session.add(request)
    session.flush()
    audit.record(
        session,
        actor=ACTOR,
        action=COMPLETED_ACTION,
        subject=f"vehicle:{vin}",
        details={"request_id": str(request.id), **counts},
        at=now,
    )
    return now


def _rowcount(result: Any) -> int:
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


def _lock_vin(session: Session, vin: str) -> None:
    """Serialize requests for one VIN (a transaction advisory lock on PostgreSQL; SQLite has
    one writer), so two concurrent requests do not both create a pending one."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"erasure:{vin}".encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    else:
        write_lock(session)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- the privacy job -----------------------------------------------------------------------------


def run_privacy_jobs(
    settings: Settings, *, now: datetime | None = None, engine: Engine | None = None
) -> dict[str, Any]:
    """One round of the privacy job: the location purge, then every pending erasure."""
    own_engine = engine is None
    engine = engine or make_engine(settings)
    try:
        purge = purge_locations(settings, now=now, engine=engine)
        erasures = process_erasures(settings, now=now, engine=engine)
    finally:
        if own_engine:
            engine.dispose()
    return {"purge": purge.as_dict(), "erasures": [r.as_dict() for r in erasures]}


async def privacy_loop(settings: Settings, stop: asyncio.Event) -> None:
    """Run the privacy job every ``privacy_interval_s`` until ``stop`` is set (in a thread;
    errors are logged and the next round runs as usual)."""
    from core.metrics import OpsServer, database_answers

    engine = make_engine(settings)
    rounds = {"running": False, "ended_at": time.monotonic()}

    async def liveness() -> str | None:
        # A round may run long (an erasure rewrites archive files); between rounds the loop
        # must come back within the interval.
        silent = time.monotonic() - float(rounds["ended_at"])
        if (
            not rounds["running"]
            and silent > settings.privacy_interval_s + settings.worker_liveness_s
        ):
            return f"the privacy loop has not run for {silent:.0f} s"
        return None

    async def readiness() -> str | None:
        return await database_answers(engine)

    ops = (
        OpsServer(
            settings.metrics_host, settings.metrics_port, liveness=liveness, readiness=readiness
        )
        if settings.metrics_port
        else None
    )
    if ops is not None:
        await ops.start()
    log.info("privacy job started: every %.0f s", settings.privacy_interval_s)
    try:
        while not stop.is_set():
            rounds["running"] = True
            try:
                report = await asyncio.to_thread(run_privacy_jobs, settings, engine=engine)
                failed = [e for e in report["erasures"] if e["error"]]
                if failed:
                    log.warning("%d erasure(s) failed and stay pending", len(failed))
            except Exception:
                log.exception("privacy job failed; retrying in %.0f s", settings.privacy_interval_s)
            finally:
                rounds["running"], rounds["ended_at"] = False, time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.privacy_interval_s)
    finally:
        if ops is not None:
            await ops.stop()
        engine.dispose()
        log.info("privacy job stopped")
