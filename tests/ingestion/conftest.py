"""Fixtures for ingestion tests: a migrated database, per-test topics and settings, the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.app import create_app, product_topics
from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import make_engine, session_scope, upgrade
from core.localkafka import ensure_topics
from tests.helpers import database_url, new_vin, stack_settings


@pytest.fixture(scope="session")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = database_url(tmp_path_factory.mktemp("db"))
    upgrade(Settings(database_url=url, environment="test"))
    return url


@pytest.fixture
def settings(tmp_path: Path, kafka_bootstrap: str, db_url: str) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    stack = stack_settings(tmp_path, kafka_bootstrap, db_url, suffix)
    asyncio.run(ensure_topics(kafka_bootstrap, product_topics(stack)))
    return stack


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        wait_for_producer(test_client)
        yield test_client


def wait_for_producer(test_client: TestClient, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if test_client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("API never became ready (Kafka producer not connected)")


def new_vehicle_token(settings: Settings, vin: str | None = None) -> tuple[str, str]:
    vin = vin or new_vin()
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            _, token = create_principal_with_credential(
                session, f"vehicle-{vin}", "vehicle", vin=vin
            )
    finally:
        engine.dispose()
    return vin, token


@pytest.fixture
def vehicle(settings: Settings) -> tuple[str, str]:
    """A registered vehicle principal: (VIN, bearer token)."""
    return new_vehicle_token(settings)
