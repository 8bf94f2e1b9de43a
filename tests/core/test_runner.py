"""The Kafka runner on a real broker: commit after store, rebalance hand-over, SIGTERM drain,
and the invalid-ratio limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from core.config import Settings
from core.localkafka import ensure_topics
from core.runner import (
    BatchHandler,
    DeadLetter,
    DlqLimitExceeded,
    HandlerResult,
    InvalidRatioLimit,
    KafkaRunner,
)


class RecordingHandler(BatchHandler):
    """Stores (partition, offset) of every record; values starting with b"bad" are invalid."""

    def __init__(self, stored: list[tuple[int, int]]) -> None:
        super().__init__()
        self.stored = stored

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        result = HandlerResult()
        for records in batch.values():
            for r in records:
                if r.value.startswith(b"bad"):
                    result.dead_letters.append(DeadLetter(r, "bad_value", "starts with bad"))
                else:
                    self.stored.append((r.partition, r.offset))
                    result.processed += 1
        self.mark_processed(batch)
        return result


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=f"k{i % 17}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        out = {}
        for p in range(partitions):
            out[p] = await consumer.committed(TopicPartition(topic, p)) or 0
        return out
    finally:
        await consumer.stop()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def make_runner(bootstrap: str, topic: str, group: str, stored: list) -> KafkaRunner:
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        consumer_poll_timeout_ms=200,
        dlq_min_messages=50,
        dlq_max_invalid_ratio=0.5,
    )
    return KafkaRunner(
        settings,
        name="test",
        topics=[topic],
        group_id=group,
        handler=RecordingHandler(stored),
        dlq_topic=f"{topic}.dlq",
    )


@pytest.mark.kafka
async def test_rebalance_hands_over_without_loss_or_duplicates(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    await ensure_topics(kafka_bootstrap, {topic: 4, f"{topic}.dlq": 1})
    await produce(kafka_bootstrap, topic, [b"v%d" % i for i in range(400)])
    first_stored: list[tuple[int, int]] = []
    second_stored: list[tuple[int, int]] = []
    first = make_runner(kafka_bootstrap, topic, group, first_stored)
    first_task = asyncio.create_task(first.run())
    await wait_until(lambda: len(first_stored) >= 400)
    second = make_runner(kafka_bootstrap, topic, group, second_stored)
    second_task = asyncio.create_task(second.run())
    await asyncio.sleep(4)  # the group rebalances; the first hands over what it stored
    await produce(kafka_bootstrap, topic, [b"w%d" % i for i in range(400)])
    await wait_until(lambda: len(first_stored) + len(second_stored) >= 800)
    first.stop()
    second.stop()
    await asyncio.gather(first_task, second_task)
    everything = first_stored + second_stored
    assert len(everything) == len(set(everything)) == 800  # nothing doubled, nothing lost
    assert second_stored, "the second process must have taken over partitions"
    assert sum((await committed(kafka_bootstrap, group, topic, 4)).values()) == 800


@pytest.mark.kafka
async def test_stop_drains_and_commits_then_restart_replays_nothing(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    await ensure_topics(kafka_bootstrap, {topic: 2, f"{topic}.dlq": 1})
    await produce(kafka_bootstrap, topic, [b"v%d" % i for i in range(100)])
    stored: list[tuple[int, int]] = []
    runner = make_runner(kafka_bootstrap, topic, group, stored)
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: len(stored) >= 100)
    runner.stop()  # what SIGTERM does
    await task
    assert sum((await committed(kafka_bootstrap, group, topic, 2)).values()) == 100
    again: list[tuple[int, int]] = []
    await make_runner(kafka_bootstrap, topic, group, again).run(until_idle_s=2)
    assert again == []


@pytest.mark.kafka
async def test_invalid_ratio_limit_stops_the_worker_without_committing(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    await ensure_topics(kafka_bootstrap, {topic: 1, f"{topic}.dlq": 1})
    await produce(kafka_bootstrap, topic, [b"bad%d" % i for i in range(200)])
    runner = make_runner(kafka_bootstrap, topic, group, [])
    with pytest.raises(DlqLimitExceeded):
        await runner.run(until_idle_s=5)
    assert (await committed(kafka_bootstrap, group, topic, 1)) == {0: 0}


class SlowToAssignHandler(RecordingHandler):
    """Loads per-partition state slowly on assignment (as the archive loads its stored keys),
    and notes any batch that arrives for a partition before that finished."""

    def __init__(self, stored: list[tuple[int, int]]) -> None:
        super().__init__(stored)
        self.loaded: set[TopicPartition] = set()
        self.early: list[TopicPartition] = []

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await asyncio.sleep(1.5)
        self.loaded |= partitions

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        self.early += [tp for tp in batch if tp not in self.loaded]
        return await super().process(batch)


@pytest.mark.kafka
async def test_no_record_reaches_the_handler_before_its_partition_is_loaded(
    kafka_bootstrap: str, unique_name: str
) -> None:
    """aiokafka can return records of a new assignment while the rebalance listener still
    runs (aio-libs/aiokafka#738); the runner holds them until ``on_assigned`` is done."""
    topic, group = unique_name, f"{unique_name}-g"
    await ensure_topics(kafka_bootstrap, {topic: 2, f"{topic}.dlq": 1})
    await produce(kafka_bootstrap, topic, [b"v%d" % i for i in range(100)])
    stored: list[tuple[int, int]] = []
    runner = make_runner(kafka_bootstrap, topic, group, stored)
    handler = SlowToAssignHandler(stored)
    runner.handler = handler
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: len(stored) >= 100)
    runner.stop()
    await task
    assert handler.early == [] and len(set(stored)) == 100


def test_invalid_ratio_window() -> None:
    limit = InvalidRatioLimit(max_ratio=0.5, min_messages=100, window=200)
    limit.record(valid=90, invalid=9)  # below the minimum: never trips
    limit.record(valid=300, invalid=100)  # 25 % invalid
    with pytest.raises(DlqLimitExceeded, match="invalid"):
        limit.record(valid=0, invalid=400)
