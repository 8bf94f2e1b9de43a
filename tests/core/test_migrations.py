"""Alembic migrations create exactly the tables the models declare, and go down and up again."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import core.models  # noqa: F401 - every table in SQLModel.metadata
from core.config import Settings
from core.db import current_revision, make_engine, upgrade
from tests.helpers import database_url


def differences(settings: Settings) -> list[object]:
    engine = make_engine(settings)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


def test_head_matches_the_models(tmp_path: Path) -> None:
    """On the test database (PostgreSQL in CI): nothing autogenerate would still add."""
    settings = Settings(database_url=database_url(tmp_path), environment="test")
    upgrade(settings)
    assert differences(settings) == []


def test_downgrade_to_base_and_upgrade_again(tmp_path: Path) -> None:
    from alembic import command

    from core.db import alembic_config

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}", environment="test")
    upgrade(settings)
    head = current_revision(settings)
    command.downgrade(alembic_config(settings), "base")
    assert current_revision(settings) is None
    upgrade(settings)
    assert current_revision(settings) == head
    assert differences(settings) == []
