"""The API's Kafka producer: started in the app lifespan, retried in the background while the
broker is unreachable, so the API serves 503 (not a crash) until Kafka is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.structs import RecordMetadata

from core.config import Settings
from core.errors import PayloadTooLarge, ServiceUnavailable
from core.runner import make_producer

log = logging.getLogger(__name__)


class ProducerHolder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever())

    async def _connect_forever(self) -> None:
        delay = 0.5
        while True:
            producer = make_producer(self.settings)
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                log.warning("Kafka not reachable yet (%s); retrying in %.1f s", exc, delay)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.producer = producer
            self.ready.set()
            return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.producer is not None:
            await self.producer.stop()

    async def send_and_wait(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        headers: Sequence[tuple[str, bytes]],
        timeout_s: float,
    ) -> RecordMetadata:
        """Write one record and wait for the broker's acknowledgement, or raise 503."""
        if self.producer is None:
            raise ServiceUnavailable("Kafka is not reachable; retry later with the same message_id")
        try:
            async with asyncio.timeout(timeout_s):
                future = await self.producer.send(
                    topic, value=value, key=key, headers=list(headers)
                )
                return await future
        except TimeoutError:
            raise ServiceUnavailable(
                f"Kafka did not acknowledge the write within {timeout_s:g} s; "
                "retry later with the same message_id"
            ) from None
        except MessageSizeTooLargeError:
            raise PayloadTooLarge(
                "the message is larger than the Kafka topic accepts; send fewer samples per message"
            ) from None
        except KafkaError as exc:
            raise ServiceUnavailable(f"Kafka rejected or failed the write: {exc}") from None
