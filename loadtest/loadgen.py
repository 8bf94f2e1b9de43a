"""HTTP load generator for ``POST /v1/telemetry``, run in its own process.

It builds every body template before any timing starts, warms up (connections, credential
cache), then keeps ``concurrency`` requests in flight on keep-alive connections for
``duration_s`` seconds. Each request is a template with a fresh ``message_id`` and ``seq``
spliced in (a byte join, microseconds), so the server never sees the same message twice.
Only 202 answers count as throughput; latencies are those of the 202 answers.

Two clients:

* ``raw`` (default): one asyncio connection per in-flight slot writing pre-encoded HTTP/1.1
  requests and parsing the status line, headers and ``Content-Length``/chunked body. It costs
  tens of microseconds of CPU per request, so on a 2-core machine the servers get the CPU.
* ``httpx``: ``httpx.AsyncClient`` with a keep-alive pool. Measured here at 2-5 ms of client
  CPU per 93 KB request (10 ms under cProfile), its pool bookkeeping growing with concurrency:
  it saturates a core at ~250 requests/s, so it measures itself, not the server. Kept for
  cross-checking.

CPU time of the watched processes (the server, the broker, this client) is read from
``/proc/<pid>/stat`` at the start and end of the timed window, so the report says which process
was the bottleneck on a small machine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from loadtest.messages import BodyTemplate, Source, http_templates, simulator_templates

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PATH = "/v1/telemetry"

ClientKind = Literal["raw", "httpx"]


@dataclass
class LoadConfig:
    base_url: str
    vehicles: list[tuple[str, str]]  # (VIN, bearer token)
    samples_per_request: int = 100
    concurrency: int = 32
    warmup_s: float = 3.0
    duration_s: float = 20.0
    seed: int = 1
    end_ms: int | None = None
    request_timeout_s: float = 30.0
    run_tag: str = "lt"
    client: ClientKind = "raw"
    source: Source = "simulator"
    fleet_seed: int = 1
    """With ``source="simulator"``: the VINs are ``make_fleet(len(vehicles), fleet_seed)``'s."""
    watch_pids: dict[str, int] = field(default_factory=dict)


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when the one that started it dies, even by SIGKILL, so
    an interrupted benchmark leaves nothing running. Safe as a ``preexec_fn`` (no imports)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (Linux ``/proc``), None if unavailable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user/nice
    return total - idle, total


def machine_busy_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of all cores busy between two ``machine_jiffies`` readings (0-100)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 1)


class CpuWindow:
    """CPU used by some processes, and by the whole machine, between ``start`` and ``stop``.

    ``others_pct`` is what the rest of the machine used (other workloads sharing it), in the
    same unit as the per-process figures: percent of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.start()

    def start(self) -> None:
        self.started = time.perf_counter()
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine_before = machine_jiffies()

    def stop(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        machine = machine_busy_pct(self.machine_before, machine_jiffies())
        cpu_pct: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            before, after = self.before.get(name), cpu_seconds(pid)
            cpu_pct[name] = (None if before is None or after is None or elapsed <= 0
                             else round(100.0 * (after - before) / elapsed, 1))
        others = None
        if machine is not None:
            ours = sum(v for v in cpu_pct.values() if v is not None)
            others = round(max(0.0, machine * (os.cpu_count() or 1) - ours), 1)
        return {"cpu_pct": cpu_pct, "machine_busy_pct": machine, "others_pct": others}


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# --------------------------------------------------------------------------------- clients


class Sender(Protocol):
    async def post(self, body: bytes, token: str) -> str:
        """Send one request; return the status code as text or an error name."""

    async def close(self) -> None: ...


class RawConnection:
    """One keep-alive HTTP/1.1 connection; reconnects after an error or ``Connection: close``."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._prefix = (f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        "Content-Type: application/json\r\nAccept: */*\r\n").encode()

    async def post(self, body: bytes, token: str) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._post(body, token)
        except TimeoutError:
            await self.close()
            return "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            return type(exc).__name__

    async def _post(self, body: bytes, token: str) -> str:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"".join((
            self._prefix, b"Authorization: Bearer ", token.encode(),
            b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n",
        )))
        self.writer.write(body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)[1]
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip().lower()
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if headers.get("connection") == "close":
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class HttpxSender:
    """A view of one shared ``httpx.AsyncClient``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def post(self, body: bytes, token: str) -> str:
        import httpx

        try:
            response = await self.client.post(PATH, content=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            return str(response.status_code)
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError as exc:
            return type(exc).__name__

    async def close(self) -> None:
        return None


# ------------------------------------------------------------------------------------ load


class _Run:
    def __init__(self, cfg: LoadConfig, templates: list[BodyTemplate]) -> None:
        self.cfg = cfg
        self.templates = templates
        self.tokens = dict(cfg.vehicles)
        self.counter = 0
        self.statuses: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self.record = False

    def next_request(self) -> tuple[bytes, str]:
        i = self.counter
        self.counter += 1
        template = self.templates[i % len(self.templates)]
        return template.body(f"{self.cfg.run_tag}-{i:012d}", i + 1), self.tokens[template.vin]

    async def worker(self, sender: Sender, deadline: float) -> None:
        while time.perf_counter() < deadline:
            body, token = self.next_request()
            started = time.perf_counter()
            status = await sender.post(body, token)
            elapsed = time.perf_counter() - started
            self.statuses[status] += 1
            if self.record and status == "202":
                self.latencies.append(elapsed)

    async def phase(self, senders: list[Sender], seconds: float) -> tuple[float, float]:
        start = time.perf_counter()
        deadline = start + seconds
        async with asyncio.timeout(seconds + self.cfg.request_timeout_s + 10.0):
            await asyncio.gather(*(self.worker(s, deadline) for s in senders))
        return start, time.perf_counter()


async def run(cfg: LoadConfig, started: Any = None) -> dict[str, Any]:
    """Build the bodies, warm up, then the timed window; ``started`` (a multiprocessing
    ``Event``, optional) is set when the timed window begins."""
    built = time.perf_counter()
    vins = [vin for vin, _ in cfg.vehicles]
    if cfg.source == "simulator":
        templates = simulator_templates(vins, fleet_seed=cfg.fleet_seed, end_ms=cfg.end_ms,
                                        samples_per_request=cfg.samples_per_request)
    else:
        templates = http_templates(vins, samples_per_request=cfg.samples_per_request,
                                   seed=cfg.seed, end_ms=cfg.end_ms)
    build_s = time.perf_counter() - built
    state = _Run(cfg, templates)
    async with contextlib.AsyncExitStack() as stack:
        senders: list[Sender]
        if cfg.client == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=cfg.concurrency,
                                  max_keepalive_connections=cfg.concurrency)
            client = await stack.enter_async_context(httpx.AsyncClient(
                base_url=cfg.base_url, limits=limits, timeout=cfg.request_timeout_s))
            senders = [HttpxSender(client)] * cfg.concurrency
        else:
            url = urlsplit(cfg.base_url)
            senders = [RawConnection(url.hostname or "127.0.0.1", url.port or 80,
                                     cfg.request_timeout_s) for _ in range(cfg.concurrency)]
        for sender in senders:
            stack.push_async_callback(sender.close)
        await state.phase(senders, cfg.warmup_s)
        warmup_statuses = dict(state.statuses)
        state.statuses = collections.Counter()
        state.record = True
        window = CpuWindow({**cfg.watch_pids, "client": os.getpid()})
        if started is not None:
            started.set()
        start, end = await state.phase(senders, cfg.duration_s)
        cpu = window.stop()
    elapsed = end - start
    ok = state.statuses.get("202", 0)
    latencies = sorted(state.latencies)
    body_bytes = sum(len(t.body("x" * 16, 1)) for t in templates) / len(templates)
    return {
        "client": cfg.client,
        "seconds": round(elapsed, 3),
        "requests": ok,
        "requests_per_s": round(ok / elapsed, 1),
        "samples_per_s": round(ok * cfg.samples_per_request / elapsed, 1),
        "p50_ms": _ms(_percentile(latencies, 0.50)),
        "p95_ms": _ms(_percentile(latencies, 0.95)),
        "p99_ms": _ms(_percentile(latencies, 0.99)),
        "max_ms": _ms(latencies[-1] if latencies else None),
        "errors": sum(n for status, n in state.statuses.items() if status != "202"),
        "errors_by_status": {s: n for s, n in sorted(state.statuses.items()) if s != "202"},
        **cpu,
        "body_bytes": round(body_bytes),
        "templates": len(templates),
        "signals_per_sample": round(_signals_per_sample(templates), 1),
        "template_build_s": round(build_s, 2),
        "warmup": warmup_statuses,
    }


def _signals_per_sample(templates: list[BodyTemplate]) -> float:
    import orjson

    samples = [s for t in templates[:50] for s in orjson.loads(t.samples_json)]
    return sum(len(s["signals"]) for s in samples) / max(1, len(samples))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def main(cfg: LoadConfig, out: Queue[tuple[str, Any]], started: Any = None) -> None:
    """Process entry point: put ``("ok", result)`` or ``("error", text)`` on ``out``."""
    die_with_parent()
    try:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        out.put(("ok", asyncio.run(run(cfg, started))))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent
        out.put(("error", f"{type(exc).__name__}: {exc}"))
