"""The local Kafka manager (core/localkafka.py) against a real broker."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

import core.localkafka as lk
from core.config import Settings
from core.localkafka import (
    ExternalKafkaConfigured,
    KafkaSetupError,
    LocalKafka,
    check_prerequisites,
    ensure_topics,
    free_ports,
    wait_until_answering,
)


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key, headers=[("src", b"test")])
    finally:
        await producer.stop()


async def _consume(
    bootstrap: str, topic: str, group: str, count: int, timeout_s: float = 30.0
) -> list[tuple[bytes | None, bytes | None]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[tuple[bytes | None, bytes | None]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(got) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    got.extend((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return got


async def _partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    return len(described["partitions"])


def _isolated(tmp_path: Path, **update: object) -> LocalKafka:
    """A LocalKafka that is never started by the suite (own dirs, own ports)."""
    port, controller_port = free_ports(2)
    settings = Settings().model_copy(
        update={
            "kafka_bootstrap_servers": "",
            "kafka_local_port": port,
            "kafka_local_controller_port": controller_port,
            "data_dir": tmp_path / "var",
            **update,
        }
    )
    return LocalKafka(settings)


@pytest.fixture
def topic() -> str:
    """A fresh topic name. (Not the suite's ``unique_name``: tests/core/conftest.py redefines
    that fixture as a prefix -> name factory for this directory.)"""
    return f"t-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ against the broker


async def test_broker_answers(kafka_bootstrap: str) -> None:
    await wait_until_answering(kafka_bootstrap, timeout_s=10)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    assert len(cluster["brokers"]) >= 1


async def test_produce_consume_round_trip(kafka_bootstrap: str, topic: str) -> None:
    await ensure_topics(kafka_bootstrap, {topic: 1})
    sent = [(f"VIN{i:03d}".encode(), f"value-{i}".encode()) for i in range(25)]
    await _produce(kafka_bootstrap, topic, sent)
    got = await _consume(kafka_bootstrap, topic, f"{topic}-g", len(sent))
    assert got == sent  # one partition: same order, nothing lost or duplicated


async def test_ensure_topics_creates_with_partitions_and_is_idempotent(
    kafka_bootstrap: str, topic: str
) -> None:
    topics = {f"{topic}.a": 3, f"{topic}.b": 1}
    await ensure_topics(kafka_bootstrap, topics)
    assert await _partition_count(kafka_bootstrap, f"{topic}.a") == 3
    assert await _partition_count(kafka_bootstrap, f"{topic}.b") == 1

    await ensure_topics(kafka_bootstrap, topics)  # again: no error
    await ensure_topics(kafka_bootstrap, {f"{topic}.a": 5})  # existing: not altered
    assert await _partition_count(kafka_bootstrap, f"{topic}.a") == 3
    await ensure_topics(kafka_bootstrap, {})


def test_status_of_running_broker(local_kafka: LocalKafka) -> None:
    status = local_kafka.status()
    assert status["running"] is True
    assert status["answering"] is True
    assert isinstance(status["pid"], int)
    assert local_kafka.pid_file.read_text().strip() == str(status["pid"])
    assert status["bootstrap"] == local_kafka.bootstrap
    assert status["bootstrap"] == f"127.0.0.1:{local_kafka.settings.kafka_local_port}"
    assert status["version"] == local_kafka.settings.kafka_version
    assert status["state_dir"] == str(local_kafka.state_dir)
    log = Path(status["log"])
    assert log.parent == local_kafka.state_dir
    assert "Kafka Server started" in log.read_text(errors="replace")
    cmdline = Path(f"/proc/{status['pid']}/cmdline")
    if cmdline.exists():
        assert b"kafka.Kafka" in cmdline.read_bytes()


def test_up_is_idempotent(local_kafka: LocalKafka) -> None:
    pid = local_kafka.status()["pid"]
    assert local_kafka.up(timeout_s=30) == local_kafka.bootstrap
    assert local_kafka.status()["pid"] == pid


def test_cached_jars_do_not_need_maven(
    local_kafka: LocalKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_maven(self: LocalKafka) -> None:
        raise AssertionError("Maven was called although the jars are cached")

    monkeypatch.setattr(LocalKafka, "_run_maven", no_maven)
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda cmd, *a, **k: None if cmd == "mvn" else real_which(cmd, *a, **k)
    )
    libs = local_kafka.ensure_jars()
    assert any(p.name.startswith("kafka_2.13-") for p in libs.glob("*.jar"))
    assert any(p.name.startswith("kafka-tools-") for p in libs.glob("*.jar"))
    assert any(p.name.startswith("log4j-slf4j-impl-") for p in libs.glob("*.jar"))


@pytest.mark.slow
async def test_kill_then_up_keeps_topic_data(local_kafka: LocalKafka, topic: str) -> None:
    bootstrap = local_kafka.bootstrap
    await ensure_topics(bootstrap, {topic: 2})
    sent = [(f"VIN{i:03d}".encode(), f"before-crash-{i}".encode()) for i in range(40)]
    await _produce(bootstrap, topic, sent)
    old_pid = local_kafka.status()["pid"]
    try:
        local_kafka.kill()
        status = local_kafka.status()
        assert status["running"] is False and status["pid"] is None
        with pytest.raises(KafkaSetupError):
            await wait_until_answering(bootstrap, timeout_s=1.5)
    finally:
        assert local_kafka.up(timeout_s=120) == bootstrap  # later tests need the broker
    assert local_kafka.status()["pid"] not in (None, old_pid)
    got = await _consume(bootstrap, topic, f"{topic}-g", len(sent), timeout_s=60)
    assert sorted(got) == sorted(sent)


# ------------------------------------------------------------------ without a broker


async def test_wait_until_answering_times_out_on_a_closed_port() -> None:
    (port,) = free_ports(1)
    with pytest.raises(KafkaSetupError, match="did not answer within"):
        await wait_until_answering(f"127.0.0.1:{port}", timeout_s=1.0)


def test_status_when_never_started(tmp_path: Path) -> None:
    local = _isolated(tmp_path)
    assert local.status() == {
        "running": False,
        "pid": None,
        "bootstrap": f"127.0.0.1:{local.settings.kafka_local_port}",
        "answering": False,
        "version": local.settings.kafka_version,
        "state_dir": str(tmp_path / "var" / "kafka"),
        "log": str(tmp_path / "var" / "kafka" / "server.log"),
    }
    assert local.down() is False
    local.kill()  # no-op


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    local = _isolated(tmp_path)
    local.state_dir.mkdir(parents=True)
    local.pid_file.write_text("999999999\n")
    assert local.status()["running"] is False
    assert not local.pid_file.exists()


def test_up_refuses_when_external_cluster_configured(tmp_path: Path) -> None:
    local = _isolated(tmp_path, kafka_bootstrap_servers="kafka.example:9092")
    with pytest.raises(ExternalKafkaConfigured, match="external Kafka cluster is configured"):
        local.up()
    assert not local.state_dir.exists()


def test_missing_java_is_named_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(KafkaSetupError) as info:
        check_prerequisites()
    message = str(info.value)
    assert "java" in message and "not found" in message
    assert "mvn" in message
    assert "apt-get install openjdk-17-jre-headless maven" in message


def test_missing_maven_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda cmd, *a, **k: None if cmd == "mvn" else real_which(cmd, *a, **k)
    )
    monkeypatch.setattr(lk, "_java_major_version", lambda java: 17)
    monkeypatch.setattr(lk, "_java_executable", lambda: "/usr/bin/java")
    with pytest.raises(KafkaSetupError, match="mvn") as info:
        check_prerequisites()
    assert "java" not in str(info.value).split("\n")[1]
    check_prerequisites(need_maven=False)  # jars cached: Maven not needed


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lk, "_java_executable", lambda: "/opt/jdk8/bin/java")
    monkeypatch.setattr(lk, "_java_major_version", lambda java: 8)
    with pytest.raises(KafkaSetupError, match="Java 8; Kafka 4 needs Java 17"):
        check_prerequisites(need_maven=False)


def test_java_version_parsing(tmp_path: Path) -> None:
    for printed, major in (
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_401"', 8),
        ('openjdk version "21" 2023-09-19', 21),
    ):
        fake = tmp_path / "java"
        fake.write_text(f"#!/bin/sh\necho '{printed}' >&2\n")
        fake.chmod(0o755)
        assert lk._java_major_version(str(fake)) == major


def test_half_finished_download_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _isolated(tmp_path, kafka_cache_dir=tmp_path / "cache")
    # A previous run died after copying some jars but before writing the marker.
    local.libs_dir.mkdir(parents=True)
    (local.libs_dir / "kafka_2.13-partial.jar").write_bytes(b"")
    calls: list[str] = []

    def fake_maven(self: LocalKafka) -> None:
        calls.append(self.version)
        shutil.rmtree(self.libs_dir)
        self.libs_dir.mkdir()
        (self.libs_dir / f"kafka_2.13-{self.version}.jar").write_bytes(b"jar")
        (self.cache_dir / ".complete").write_text(f"kafka_2.13-{self.version}.jar\n")

    monkeypatch.setattr(LocalKafka, "_run_maven", fake_maven)
    monkeypatch.setattr(lk, "check_prerequisites", lambda **_: None)
    assert local.ensure_jars() == local.libs_dir
    assert local.ensure_jars() == local.libs_dir
    assert calls == [local.version]  # fetched once, then cached
    (local.libs_dir / f"kafka_2.13-{local.version}.jar").unlink()  # cache damaged
    local.ensure_jars()
    assert len(calls) == 2


def test_maven_failure_is_reported(tmp_path: Path) -> None:
    if shutil.which("mvn") is None or lk._java_executable() is None:
        pytest.skip("needs java and mvn")
    local = _isolated(tmp_path, kafka_cache_dir=tmp_path / "cache", kafka_version="0.0.1")
    with pytest.raises(KafkaSetupError, match=r"kafka_2\.13:0\.0\.1"):
        local.ensure_jars()
    assert not (local.cache_dir / ".complete").exists()


def test_bad_version_is_refused(tmp_path: Path) -> None:
    local = _isolated(tmp_path, kafka_cache_dir=tmp_path / "cache", kafka_version="4.1.1</v>")
    with pytest.raises(KafkaSetupError, match="Not a Kafka version"):
        local.ensure_jars()
