"""The hash-chained audit log: appends chain, any edit, removal or reordering is found, and
concurrent appends stay one linear chain (PostgreSQL in CI)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core import audit
from core.config import Settings
from core.db import make_engine, session_scope, upgrade
from tests.helpers import database_url


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    # Its own database file (or the CI PostgreSQL, emptied of audit rows first): the chain
    # is global, so tests that count events need it to start empty.
    url = database_url(tmp_path)
    settings = Settings(database_url=url, data_dir=tmp_path, environment="test")
    upgrade(settings)
    engine = make_engine(settings)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event"))
        conn.execute(text("DELETE FROM audit_head"))
    yield engine
    engine.dispose()


def append(engine: Engine, n: int, actor: str = "ops") -> None:
    for i in range(n):
        with session_scope(engine) as session:
            audit.record(
                session,
                actor=actor,
                action="campaign.launch",
                subject=f"c{i}",
                details={"wave": i, "vehicles": [1, 2]},
            )


def test_appends_form_a_chain_that_verifies(engine: Engine) -> None:
    append(engine, 5)
    with session_scope(engine) as session:
        check = audit.verify_chain(session)
        events = audit.list_events(session, limit=10)
    assert check.ok and check.events == 5
    assert [e.seq for e in events] == [5, 4, 3, 2, 1]
    assert events[-1].prev_hash == audit.GENESIS
    assert all(a.prev_hash == b.hash for a, b in zip(events, events[1:], strict=False))


@pytest.mark.parametrize(
    ("tamper", "reason", "seq"),
    [
        ("UPDATE audit_event SET actor = 'mallory' WHERE seq = 3", "event was modified", 3),
        ("DELETE FROM audit_event WHERE seq = 2", "missing event", 2),
        ("DELETE FROM audit_event WHERE seq = 5", "events after the last one are missing", 5),
        (
            "UPDATE audit_event SET prev_hash = hash WHERE seq = 4",
            "broken link to the previous event",
            4,
        ),
    ],
)
def test_tampering_is_found(engine: Engine, tamper: str, reason: str, seq: int) -> None:
    append(engine, 5)
    with engine.begin() as conn:
        conn.execute(text(tamper))
    with session_scope(engine) as session:
        check = audit.verify_chain(session)
    assert not check.ok and check.reason == reason and check.first_bad_seq == seq


def test_concurrent_appends_stay_one_chain(engine: Engine) -> None:
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for j in range(5):
                with Session(engine) as session:
                    audit.record(session, actor=f"t{i}", action="key.rotate", subject=f"{i}.{j}")
                    session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors[:3]
    with session_scope(engine) as session:
        check = audit.verify_chain(session)
    assert check.ok and check.events == 40
