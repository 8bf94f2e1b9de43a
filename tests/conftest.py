"""Suite-wide fixtures: a real Kafka broker for the tests that need one.

- ``kafka_bootstrap`` (session): bootstrap servers of a real broker. ``KAFKA_BOOTSTRAP_SERVERS``
  (or ``FLEET_KAFKA_BOOTSTRAP_SERVERS``) when set; otherwise a local single-node broker
  (core/localkafka.py) started on first use, with its own state dir under the session's tmp
  dir and its own free ports (a developer's ``make run`` broker on 9092 is left alone), and
  stopped when the session ends.
- ``local_kafka`` (session): that :class:`LocalKafka`, for tests that crash and restart the
  broker; skipped when an external cluster is configured. Such a test must leave the broker
  running (``local_kafka.up()``) for the tests after it.
- ``unique_name``: ``t-<8 hex>``, for topic and consumer-group names that no other test uses.

Tests that use a broker are marked ``kafka`` automatically, so ``pytest -m "not kafka"``
runs the rest without Java.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from core.config import Settings
from core.localkafka import LocalKafka, free_ports

_KAFKA_FIXTURES = {"kafka_bootstrap", "local_kafka"}


@pytest.fixture(scope="session")
def _kafka_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, LocalKafka | None]]:
    settings = Settings()
    if settings.kafka_bootstrap_servers:
        yield settings.kafka_bootstrap_servers, None
        return
    port, controller_port = free_ports(2)
    local = LocalKafka(
        settings.model_copy(
            update={
                "kafka_local_port": port,
                "kafka_local_controller_port": controller_port,
                "data_dir": tmp_path_factory.mktemp("fleet-var"),
            }
        ),
        state_dir=tmp_path_factory.mktemp("kafka"),
        stop_with_parent=True,  # a killed test run leaves no broker behind
    )
    bootstrap = local.up(timeout_s=120.0)
    try:
        yield bootstrap, local
    finally:
        local.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_session: tuple[str, LocalKafka | None]) -> str:
    """Bootstrap servers of a real, running Kafka broker (external or local)."""
    return _kafka_session[0]


@pytest.fixture(scope="session")
def local_kafka(_kafka_session: tuple[str, LocalKafka | None]) -> LocalKafka:
    """The session's local broker, for crash/restart tests; skipped with an external one."""
    local = _kafka_session[1]
    if local is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS points at an external cluster; no local broker")
    return local


@pytest.fixture
def unique_name() -> str:
    """A fresh ``t-<8 hex>`` name for a topic or consumer group."""
    return f"t-{uuid.uuid4().hex[:8]}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _KAFKA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)
