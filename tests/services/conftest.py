"""Fixtures for services tests: the ingestion fixtures (migrated database, per-test topics and
settings, the API) and database-only settings for tests that need no broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from core.config import Settings
from core.db import make_engine
from tests.ingestion.conftest import client, db_url, settings  # noqa: F401


@pytest.fixture
def db_settings(tmp_path: Path, db_url: str) -> Settings:  # noqa: F811
    """Settings on the migrated test database (PostgreSQL in CI), without Kafka."""
    return Settings(database_url=db_url, data_dir=tmp_path, environment="test")


@pytest.fixture
def engine(db_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(db_settings)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def only_this_tests_centers(db_url: str) -> None:  # noqa: F811
    """Bookings go to the nearest capable *active* center, and the test database is shared by
    the whole session: deactivate the centers earlier tests registered."""
    from sqlalchemy import text

    engine = make_engine(Settings(database_url=db_url, environment="test"))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE service_center SET active = false WHERE active"))
    finally:
        engine.dispose()
