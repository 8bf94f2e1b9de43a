"""Erasure: a request removes the vehicle's raw data from the archive and its rows from every
store, revokes its consents, deletes its pseudonym mapping and leaves an audit record; other
vehicles are untouched, and a crash part-way is finished by the next run."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from core import audit
from core.auth.models import Principal, Role
from core.config import Settings
from core.db import make_engine, session_scope, utcnow
from core.vehicles.models import VehicleStatus
from ingestion.archive import ParquetArchive
from tests.helpers import new_vin
from tests.ubi.test_retention import LOCATION, PLAIN, write_roll
from ubi import erasure
from ubi.erasure import (
    COMPLETED_ACTION,
    ERASED_TABLES,
    REQUESTED_ACTION,
    erase_archive,
    erased_before,
    process_erasures,
    request_erasure,
)
from ubi.models import (
    AnalyticsState,
    BatteryHealthRecord,
    BatterySession,
    Consent,
    ErasureRequest,
    ErasureState,
    Pseudonym,
    Purpose,
    UbiEvent,
    UbiScore,
    UbiTrip,
)

T0 = datetime(2026, 10, 1, 8, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:  # noqa: F811 - the fixture
    """A tmp archive and the session's migrated database; no Kafka."""
    return Settings(data_dir=tmp_path, database_url=db_url, environment="test")


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def vehicle_rows(vin: str, grantee_id: uuid.UUID) -> list[SQLModel]:
    end = T0 + timedelta(minutes=20)
    return [
        UbiTrip(
            trip_id=f"{vin}:{int(T0.timestamp() * 1000)}",
            vin=vin,
            start_at=T0,
            end_at=end,
            start_local="2026-10-01T10:00",
            end_local="2026-10-01T10:20",
            time_zone="Europe/Berlin",
            distance_m=12_000.0,
            distance_source="odometer",
            duration_s=1200.0,
            moving_s=1100.0,
            idle_s=100.0,
            night_s=0.0,
            speeding_s=0.0,
            night_share=0.0,
            speeding_share=0.0,
            speed_limit_source="none",
            samples=1200,
        ),
        UbiEvent(
            event_id=f"{vin}:harsh_brake:{int(T0.timestamp() * 1000)}",
            vin=vin,
            type="harsh_brake",
            start_at=T0,
            end_at=T0 + timedelta(seconds=2),
            peak_mps2=5.0,
            severity=2,
            source="accel",
        ),
        UbiScore(
            vin=vin,
            period_days=30,
            period_start=T0 - timedelta(days=30),
            period_end=T0,
            score=81.0,
            score_low=75.0,
            score_high=86.0,
            data_sufficient=True,
            score_version="test",
        ),
        BatterySession(
            vin=vin,
            start_at=T0,
            end_at=end,
            dc=False,
            soc_start_pct=20.0,
            soc_end_pct=80.0,
            energy_kwh=40.0,
            soh_energy_pct=96.0,
            sigma_pct=1.5,
        ),
        BatteryHealthRecord(vin=vin, soh_pct=96.0, score_version="test"),
        AnalyticsState(worker="ubi", vin=vin, state=b"\x80"),
        AnalyticsState(worker="battery", vin=vin, state=b"\x80"),
        VehicleStatus(vin=vin, position_ts=T0, latitude=52.5, longitude=13.4),
        Pseudonym(
            pseudonym="p_" + uuid.uuid4().hex[:26], vin=vin, grantee_id=grantee_id, key_version=1
        ),
        Consent(
            vin=vin,
            grantee_id=grantee_id,
            purpose=Purpose.ubi,
            expires_at=utcnow() + timedelta(days=365),
            granted_by="owner",
        ),
    ]


def count_rows(session: Session, vin: str) -> dict[str, int]:
    counts = {}
    for model in ERASED_TABLES:
        table = model.__table__  # type: ignore[attr-defined]
        counts[table.name] = len(session.execute(select(table).where(table.c.vin == vin)).all())
    return counts


def archive_vins(archive: ParquetArchive) -> list[str]:
    return list(archive.dataset().to_table(columns=["vin"]).column("vin").to_pylist())


@pytest.fixture
def world(settings: Settings, engine: Engine) -> dict[str, Any]:
    """Two vehicles with data in the archive (two days, a shared file) and in every store."""
    vin, other = new_vin(), new_vin()
    archive = ParquetArchive(settings.archive_location)
    shared = write_roll(archive, [(vin, T0, PLAIN | LOCATION), (other, T0, PLAIN)])
    only_vin = write_roll(archive, [(vin, T0 + timedelta(days=1), PLAIN)])
    with session_scope(engine) as session:
        grantee = Principal(name=f"insurer-{uuid.uuid4().hex[:10]}", role=Role.insurer)
        session.add(grantee)
        session.flush()
        for v in (vin, other):
            session.add_all(vehicle_rows(v, grantee.id))
        session.add(
            Consent(
                vin=vin,
                grantee_id=grantee.id,
                purpose=Purpose.battery,
                expires_at=utcnow() + timedelta(days=30),
                granted_by="owner",
                revoked_at=T0,
                revoked_by="owner",
            )
        )
    return {
        "vin": vin,
        "other": other,
        "archive": archive,
        "shared": shared[0],
        "only_vin": only_vin[0],
    }


def consents(session: Session, vin: str) -> list[Consent]:
    return list(
        session.exec(select(Consent).where(Consent.vin == vin).order_by(col(Consent.granted_at)))
    )


def completed_events(session: Session, vin: str) -> list[audit.AuditEvent]:
    return audit.list_events(session, action=COMPLETED_ACTION, subject=f"vehicle:{vin}")


def test_erasure_removes_the_vehicle_everywhere_and_keeps_others(
    settings: Settings, engine: Engine, world: dict[str, Any]
) -> None:
    vin, other, archive = world["vin"], world["other"], world["archive"]
    keys_before = archive.stored_keys(archive.manifests(), {("t", 0)})
    with session_scope(engine) as session:
        request = request_erasure(session, vin, requested_by="ops", settings=settings)
        again = request_erasure(session, vin, requested_by="someone-else", settings=settings)
        assert again.id == request.id
        request_id, requested_at, due_at = request.id, request.requested_at, request.due_at
    assert due_at - requested_at == timedelta(hours=settings.erasure_deadline_h)
    with session_scope(engine) as session:
        pending = session.get(ErasureRequest, request_id)
        assert pending is not None and pending.state == ErasureState.pending
        requested = audit.list_events(session, action=REQUESTED_ACTION, subject=f"vehicle:{vin}")
        assert len(requested) == 1 and requested[0].actor == "ops"

    [result] = process_erasures(settings, only_vin=vin)

    assert result.request_id == request_id and result.error is None and result.done
    assert result.completed_at is not None and result.completed_at <= due_at
    assert result.counts["archive_files"] == 2 and result.counts["archive_rows"] == 4
    # archive: the VIN is gone, the other vehicle's rows are all there
    vins = archive_vins(archive)
    assert vin not in vins and vins.count(other) == 2
    shared = pq.ParquetFile(world["shared"]).read()
    assert shared.schema == archive.schema and shared.column("vin").to_pylist() == [other] * 2
    emptied = pq.ParquetFile(world["only_vin"]).read()  # kept, empty, same schema
    assert emptied.num_rows == 0 and emptied.schema == archive.schema
    assert archive.stored_keys(archive.manifests(), {("t", 0)}) == {
        k: v for k, v in keys_before.items() if k[0] != vin
    }
    assert archive.recover(archive.manifests()) == 0
    with session_scope(engine) as session:
        assert set(count_rows(session, vin).values()) == {0}
        assert all(n > 0 for n in count_rows(session, other).values())
        for table in ("ubi_trip", "ubi_event", "ubi_score", "battery_session", "pseudonym"):
            assert result.counts[table] == 1, table
        assert result.counts["analytics_state"] == 2
        assert result.counts["consent_revoked"] == 1
        active, revoked_before = consents(session, vin)[0], consents(session, vin)[1]
        assert active.revoked_by == "erasure" and active.revoked_at == result.completed_at
        assert revoked_before.revoked_by == "owner"  # the earlier revocation is kept
        assert all(c.revoked_at is None for c in consents(session, other))
        done = session.get(ErasureRequest, request_id)
        assert done is not None and done.state == ErasureState.done
        assert done.completed_at == result.completed_at and done.details == result.counts
        [event] = completed_events(session, vin)
        assert event.actor == "privacy"
        assert event.details == {"request_id": str(request_id), **result.counts}
        assert erased_before(session, [vin, other]) == {vin: requested_at}
        assert audit.verify_chain(session).ok

    # idempotent: nothing pending, the archive holds nothing more of the VIN
    assert process_erasures(settings, only_vin=vin) == []
    assert erase_archive(archive, vin) == (0, 0)
    # a new request after the erasure is a new one
    with session_scope(engine) as session:
        second = request_erasure(session, vin, requested_by="ops", settings=settings)
        assert second.id != request_id
    [rerun] = process_erasures(settings, only_vin=vin)
    assert rerun.done and rerun.counts["archive_rows"] == 0 and rerun.counts["ubi_trip"] == 0


def test_crash_between_archive_and_database_is_finished_by_a_rerun(
    settings: Settings,
    engine: Engine,
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vin, other, archive = world["vin"], world["other"], world["archive"]
    with session_scope(engine) as session:
        request_id = request_erasure(session, vin, requested_by="ops", settings=settings).id

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(erasure, "_erase_database", crash)
    [failed] = process_erasures(settings, only_vin=vin)
    assert failed.request_id == request_id and not failed.done
    assert failed.error is not None and "simulated crash" in failed.error
    assert vin not in archive_vins(archive)  # the archive step happened
    with session_scope(engine) as session:
        pending = session.get(ErasureRequest, request_id)
        assert pending is not None and pending.state == ErasureState.pending
        assert pending.completed_at is None
        assert all(n > 0 for n in count_rows(session, vin).values())  # rolled back
        assert completed_events(session, vin) == []

    monkeypatch.undo()
    [result] = process_erasures(settings, only_vin=vin)
    assert result.request_id == request_id and result.done and result.error is None
    assert result.counts["archive_rows"] == 0  # already rewritten by the first run
    assert result.counts["ubi_trip"] == 1 and result.counts["pseudonym"] == 1
    assert archive_vins(archive).count(other) == 2
    with session_scope(engine) as session:
        assert set(count_rows(session, vin).values()) == {0}
        assert len(completed_events(session, vin)) == 1


def test_only_the_given_vin_is_processed(settings: Settings, engine: Engine) -> None:
    first, second = new_vin(), new_vin()
    with session_scope(engine) as session:
        a = request_erasure(session, first, requested_by="ops", settings=settings)
        b = request_erasure(session, second, requested_by="ops", settings=settings)
        assert a.id != b.id
    assert [r.vin for r in process_erasures(settings, only_vin=first)] == [first]
    with session_scope(engine) as session:
        waiting = session.get(ErasureRequest, b.id)
        assert waiting is not None and waiting.state == ErasureState.pending
    [done] = process_erasures(settings, only_vin=second)
    assert done.done


def test_invalid_vin_is_refused(settings: Settings, engine: Engine) -> None:
    from core.errors import ValidationFailed

    with session_scope(engine) as session, pytest.raises(ValidationFailed):
        request_erasure(session, "NOT-A-VIN", requested_by="ops", settings=settings)


def test_a_request_claimed_by_another_runner_is_skipped(settings: Settings, engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks (FOR UPDATE SKIP LOCKED) need PostgreSQL")
    vin = new_vin()
    with session_scope(engine) as session:
        request_id = request_erasure(session, vin, requested_by="ops", settings=settings).id
    with session_scope(engine) as holder:
        holder.exec(
            select(ErasureRequest).where(ErasureRequest.id == request_id).with_for_update()
        ).one()
        assert process_erasures(settings, only_vin=vin) == []  # locked: another runner has it
    [done] = process_erasures(settings, only_vin=vin)
    assert done.request_id == request_id and done.done


def test_privacy_loop_survives_errors_and_stops(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    calls: list[int] = []
    loop: asyncio.AbstractEventLoop | None = None
    three = asyncio.Event()

    def job(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 3 and loop is not None:
            loop.call_soon_threadsafe(three.set)
        if len(calls) == 1:
            raise RuntimeError("database away")
        return {"purge": {}, "erasures": []}

    monkeypatch.setattr(erasure, "run_privacy_jobs", job)
    fast = settings.model_copy(update={"privacy_interval_s": 0.01})

    async def main() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.create_task(erasure.privacy_loop(fast, stop))
        await asyncio.wait_for(three.wait(), 5)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert len(calls) >= 3


def test_cli_erase_and_list(
    settings: Settings, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import core.auth.cli
    from ubi import privacy_cli

    monkeypatch.setattr(privacy_cli, "get_settings", lambda: settings)
    monkeypatch.setattr(core.auth.cli, "get_settings", lambda: settings)
    runner = CliRunner()
    vin = world["vin"]

    bad = runner.invoke(privacy_cli.privacy_app, ["erase", "NOT-A-VIN"])
    assert bad.exit_code == 2 and "invalid VIN" in bad.output and bad.exception is not None
    assert isinstance(bad.exception, SystemExit)  # typer.Exit, not a traceback
    unknown = runner.invoke(privacy_cli.privacy_app, ["erase", new_vin()])
    assert unknown.exit_code == 2 and "unknown VIN" in unknown.output
    state = runner.invoke(privacy_cli.privacy_app, ["requests", "--state", "nope"])
    assert state.exit_code == 2

    erased = runner.invoke(privacy_cli.privacy_app, ["erase", vin, "--now"])
    assert erased.exit_code == 0, erased.output
    assert vin not in archive_vins(world["archive"])
    listed = runner.invoke(privacy_cli.privacy_app, ["requests", "--vin", vin])
    assert listed.exit_code == 0 and "done" in listed.output


def test_the_privacy_loop_serves_probes_and_stops(settings: Settings) -> None:
    import asyncio

    import httpx

    from ubi.erasure import privacy_loop

    with socket.create_server(("127.0.0.1", 0)) as probe:
        free = probe.getsockname()[1]
    configured = settings.model_copy(update={"metrics_port": free, "privacy_interval_s": 0.2})

    async def scenario() -> tuple[int, int, str]:
        stop = asyncio.Event()
        task = asyncio.create_task(privacy_loop(configured, stop))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free}") as client:
            for _ in range(50):
                try:
                    live = await client.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            ready = await client.get("/readyz")
            metrics = await client.get("/metrics")
        stop.set()
        await asyncio.wait_for(task, 30)
        return live.status_code, ready.status_code, metrics.text

    live, ready, metrics = asyncio.run(scenario())
    assert (live, ready) == (200, 200)
    assert "# HELP" in metrics
