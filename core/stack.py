"""Runs the whole product on one machine: local Kafka, migrated database, the API and the
workers as child processes, and a simulated fleet; shows a live status; stops everything it
started. Behind ``fleet run`` (``make run``) and ``fleet demo``.

Each worker (and the webhook dispatcher) gets its own ``FLEET_METRICS_PORT`` for ``/metrics``,
``/healthz`` and ``/readyz``: the first free port from ``FLEET_METRICS_PORT`` (9108) upwards,
in start order; ``FLEET_METRICS_PORT=0`` gives them none. The API serves its metrics on its
own port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from core.config import Settings

console = Console(stderr=True)
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # retries are shown as status instead


class StackError(RuntimeError):
    """A component did not start; the message says which and where its log is."""


@dataclass
class ChildProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0


@dataclass
class Stack:
    settings: Settings
    archive_group: str | None = None
    children: list[ChildProcess] = field(default_factory=list)
    kafka_started_here: bool = False
    _next_metrics_port: int = 0

    # -- environment -------------------------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        s = self.settings
        env.update(
            FLEET_DATA_DIR=str(s.data_dir.resolve()),
            DATABASE_URL=s.sqlalchemy_url,
            KAFKA_BOOTSTRAP_SERVERS=s.bootstrap_servers,
            FLEET_TELEMETRY_TOPIC=s.telemetry_topic,
            FLEET_TELEMETRY_DLQ_TOPIC=s.telemetry_dlq_topic,
            FLEET_ARCHIVE_URL=s.archive_location,
            FLEET_ARCHIVE_ROLL_SECONDS=str(s.archive_roll_seconds),
            FLEET_API_PORT=str(s.api_port),
            FLEET_API_HOST=s.api_host,
            FLEET_METRICS_PORT="0",  # per child: see spawn(..., metrics=True)
        )
        return env

    def metrics_port(self) -> int:
        """The next free metrics port (0 when ``FLEET_METRICS_PORT=0``)."""
        if not self.settings.metrics_port:
            return 0
        port = max(self._next_metrics_port, self.settings.metrics_port)
        while port_in_use(self.settings.metrics_host, port):
            port += 1
        self._next_metrics_port = port + 1
        return port

    def start_kafka(self) -> str:
        if not self.settings.kafka_is_local:
            console.print(f"Kafka: using the configured cluster {self.settings.bootstrap_servers}")
            return self.settings.bootstrap_servers
        from core.localkafka import LocalKafka

        local = LocalKafka(self.settings)
        self.kafka_started_here = not local.status()["running"]
        with console.status("Kafka: resolving jars and starting the local broker..."):
            bootstrap = local.up()
        console.print(f"Kafka: local broker on {bootstrap}")
        return bootstrap

    def migrate_and_create_topics(self) -> None:
        from core.app import product_topics
        from core.db import upgrade
        from core.localkafka import ensure_topics

        upgrade(self.settings)
        asyncio.run(ensure_topics(self.settings.bootstrap_servers, product_topics(self.settings)))

    # -- child processes ---------------------------------------------------------------------
    def spawn(self, name: str, args: Sequence[str], *, metrics: bool = False) -> ChildProcess:
        """Start ``fleet ARGS`` as a child; ``metrics``: give it its own metrics port."""
        log_dir = self.settings.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"{name}.log"
        env = self.child_env()
        port = self.metrics_port() if metrics else 0
        env["FLEET_METRICS_PORT"] = str(port)
        process = subprocess.Popen(
            [sys.executable, "-c", "from core.cli import main; main()", *args],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to us; we stop children in order
        )
        child = ChildProcess(name, process, log, port)
        self.children.append(child)
        return child

    def start_api(self, timeout_s: float = 60.0) -> str:
        child = self.spawn("api", ["api"])
        base = f"http://{self.settings.api_host}:{self.settings.api_port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise StackError(f"the API exited; see {child.log}:\n{tail(child.log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    console.print(f"API: {base} (docs at {base}/docs)")
                    return base
            time.sleep(0.3)
        raise StackError(f"the API did not become ready in {timeout_s:.0f} s; see {child.log}")

    def start_workers(self, names: Sequence[str]) -> None:
        for name in names:
            args = ["worker", name]
            if name == "archive" and self.archive_group:
                args += ["--group", self.archive_group]
            self.spawn(f"worker-{name}", args, metrics=True)
        console.print(f"workers: {', '.join(names)}")

    def print_metrics_endpoints(self) -> None:
        host = self.settings.metrics_host
        served = [f"{c.name} :{c.metrics_port}" for c in self.children if c.metrics_port]
        if served:
            console.print(f"metrics and probes (http://{host}:PORT/metrics): {', '.join(served)}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every child (workers drain and commit), then the local broker if ours."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in reversed(self.children):
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                console.print(f"[yellow]{child.name} did not stop in time; killing it[/]")
                child.process.kill()
                child.process.wait()
        if self.kafka_started_here:
            from core.localkafka import LocalKafka

            LocalKafka(self.settings).down()
            console.print("Kafka: local broker stopped")

    def worker_stats(self) -> dict[str, dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = {}
        for child in self.children:
            if not child.name.startswith("worker-"):
                continue
            path = self.settings.data_dir / "run" / f"{child.name}-{child.process.pid}.json"
            with contextlib.suppress(FileNotFoundError, ValueError):
                stats[child.name.removeprefix("worker-")] = json.loads(path.read_text())
        return stats

    def dead_children(self) -> list[ChildProcess]:
        return [c for c in self.children if c.process.poll() is not None]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host if host not in ("", "0.0.0.0") else "127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(FileNotFoundError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


async def start_group_at_end(bootstrap: str, group: str, topic: str) -> None:
    """Commit the current end offsets for ``group`` so it reads only what comes next."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        metadata = await consumer._client.fetch_all_metadata()  # noqa: SLF001
        parts = metadata.partitions_for_topic(topic)
        if not parts:
            raise StackError(f"topic {topic} not found on {bootstrap}")
        partitions = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit({tp: off for tp, off in ends.items()})
    finally:
        await consumer.stop()


def status_table(
    vehicles: int,
    sim: dict[str, Any],
    rate: float,
    workers: dict[str, dict[str, Any]],
    elapsed: float,
) -> Table:
    table = Table(title=f"fleet status  ({elapsed:,.0f} s)", show_header=True, expand=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("vehicles", f"{vehicles:,}")
    table.add_row("messages sent", f"{sim.get('sent', 0):,}")
    table.add_row("messages accepted", f"{sim.get('accepted', 0):,}")
    table.add_row("accepted / s", f"{rate:,.1f}")
    table.add_row("rejected / failed", f"{sim.get('rejected', 0):,} / {sim.get('failed', 0):,}")
    for name, w in sorted(workers.items()):
        lag = sum(w.get("lag", {}).values())
        table.add_row(f"{name}: processed", f"{w.get('processed', 0):,}")
        table.add_row(f"{name}: consumer lag", f"{lag:,}")
        table.add_row(f"{name}: dead-lettered", f"{w.get('dead_lettered', 0):,}")
        table.add_row(f"{name}: duplicates dropped", f"{w.get('duplicates', 0):,}")
    return table
