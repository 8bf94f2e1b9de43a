"""Database engine, sessions and migrations (SQLModel on SQLAlchemy, Alembic).

Engines are created explicitly (in the app lifespan or a worker's start-up), never at import.
Services never commit: ``session_scope`` (workers, CLI) and the request dependency commit or
roll back once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Table, event, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

from core.config import Settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only kind of datetime we store)."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always comes back timezone-aware.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are written as naive
    UTC and tagged UTC again on the way out. Naive datetimes are refused on write: guessing their
    zone is how off-by-hours bugs are born.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"UtcDateTime needs a timezone-aware datetime, got {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def write_lock(session: Session) -> None:
    """Before a read-then-write that must not race: on SQLite, become its one writer now.

    SQLite ignores ``SELECT ... FOR UPDATE``, and pysqlite begins a transaction only at the
    first write, so reads before it are not isolated and a SAVEPOINT opened first would commit
    on its own at RELEASE. A no-op UPDATE begins the transaction and takes the write lock, so
    what follows reads current data and savepoints nest. PostgreSQL needs nothing here: its row
    locks do the work.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE alembic_version SET version_num = version_num WHERE 1 = 0"))


UPSERT_CHUNK = 500


def dialect_insert(session: Session, table: Table) -> Insert:
    """An INSERT that supports ``on_conflict_do_*`` on the session's database."""
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(table)


def upsert(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    key: Sequence[str],
    update: Iterable[str],
    keep_existing: Iterable[str] = (),
) -> None:
    """Insert ``rows``, or update ``update`` columns on a conflict of ``key`` (a replayed batch
    rewrites the same rows); ``keep_existing`` columns keep their stored value when the new one
    is NULL."""
    update, keep = list(update), set(keep_existing)
    for start in range(0, len(rows), UPSERT_CHUNK):
        chunk = [dict(row) for row in rows[start : start + UPSERT_CHUNK]]
        statement = dialect_insert(session, table).values(chunk)
        excluded = statement.excluded  # type: ignore[attr-defined]
        statement = statement.on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=list(key),
            set_={
                name: func.coalesce(getattr(excluded, name), table.c[name])
                if name in keep
                else getattr(excluded, name)
                for name in update
            },
        )
        session.execute(statement)


def alembic_config(settings: Settings):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (``fleet db upgrade``)."""
    from alembic import command

    url = settings.sqlalchemy_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)


def current_revision(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
