"""Fixtures for the auth and vehicle-registry tests: a real database, principals, an app client.

The database is PostgreSQL when ``DATABASE_URL`` is set, as in CI, else a SQLite file in a
temporary directory; the schema comes from the Alembic migrations, exactly as in production.
Tests isolate themselves by creating rows with unique names and VINs, so they can share one
schema and run in any order.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.auth import service as auth_service
from core.auth.api import router as auth_router
from core.auth.models import Principal, Role
from core.config import Settings, get_settings
from core.db import make_engine, session_scope, upgrade
from core.errors import install_error_handlers
from core.vehicles.api import router as vehicles_router
from core.vin import make_vin
from tests.helpers import database_url

_VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"

PrincipalFactory = Callable[..., tuple[Principal, str]]


@pytest.fixture(scope="session")
def db_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("fleet-data")
    url = database_url(data_dir)  # DATABASE_URL (PostgreSQL in CI) or a SQLite file
    return Settings(environment="test", database_url=url, data_dir=data_dir)


@pytest.fixture(scope="session")
def engine(db_settings: Settings) -> Iterator[Engine]:
    upgrade(db_settings)
    engine = make_engine(db_settings)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose uncommitted work is rolled back after the test."""
    with Session(engine, expire_on_commit=False) as session:
        yield session
        session.rollback()


@pytest.fixture
def new_vin() -> Callable[[], str]:
    """Fresh, valid VINs (with a correct check digit), unique across test runs."""

    def _new_vin() -> str:
        vds = "".join(random.choices(_VIN_ALPHABET, k=5))
        return make_vin("1FT", vds, random.choice("LMNPRS"), "T", random.randrange(1_000_000))

    return _new_vin


@pytest.fixture
def fresh_name() -> Callable[[str], str]:
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_principal(
    engine: Engine, new_vin: Callable[[], str], fresh_name: Callable[[str], str]
) -> PrincipalFactory:
    """Create and commit a principal with one credential; returns it and its token.

    A vehicle principal gets a fresh VIN unless ``vin`` is given."""

    def _make(role: Role, **options: object) -> tuple[Principal, str]:
        if role is Role.vehicle:
            options.setdefault("vin", new_vin())
        options.setdefault("name", fresh_name(role.value))
        with session_scope(engine) as session:
            return auth_service.create_principal_with_credential(session, role=role, **options)  # type: ignore[arg-type]

    return _make


@pytest.fixture
def app(engine: Engine, db_settings: Settings) -> FastAPI:
    """A minimal app with the auth and vehicle routers (until the real app factory exists)."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.engine = engine
    app.state.settings = db_settings
    app.include_router(auth_router)
    app.include_router(vehicles_router)
    return app


@pytest.fixture
def app_client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def cli_database(db_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point ``core.config.get_settings()`` (what the CLI reads) at the test database."""
    monkeypatch.setenv("FLEET_DATABASE_URL", db_settings.database_url)
    monkeypatch.setenv("FLEET_DATA_DIR", str(db_settings.data_dir))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
