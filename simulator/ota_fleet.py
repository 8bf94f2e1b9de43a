"""A simulated fleet that takes over-the-air updates through the real API.

Each :class:`SimulatedOtaVehicle` is one vehicle's Uptane primary on the API's base URL::

    http = httpx.Client(timeout=30.0)
    vehicle = SimulatedOtaVehicle(vin, token, {"BMS": OtaEcu("BMS-HW-1", version="1.0.0")},
                                  base_url="http://127.0.0.1:8000", http=http,
                                  cache_dir=tmp / vin)
    vehicle.step()                      # one check-in and whatever it leads to
    run = run_fleet(vehicles, until=campaign_done, timeout_s=120, concurrency=8)

:meth:`SimulatedOtaVehicle.step` does what a vehicle does when it wakes up:

1. on its first step, sends its version manifest (``PUT /v1/ota/manifest``);
2. ``GET /v1/ota/check-in`` with ``If-None-Match``: a 304 ends the step (nothing changed);
3. when the check-in offers updates, a full Uptane verification of the Director and the
   Image repository (:class:`simulator.ota_client.UptaneClient` over :class:`AuthFetcher`);
4. for each verified update, the conditions from the *signed* Director metadata: maintenance
   windows in the vehicle's local time and the deadline (:func:`ota.windows.install_decision`),
   minimum state of charge and parked, and for a soft update the driver's consent (given with
   ``consent_probability`` per step; a forced one, or one past its deadline, needs none);
5. then reports ``downloading``, downloads (length and hashes verified), reports
   ``installing`` and the result that :attr:`SimulatedOtaVehicle.install_outcome` decides
   (``succeeded``, or ``failed`` / ``rolled_back`` with an error code such as
   ``E_FLASH_VERIFY``: see :func:`fails_on_hardware`), and sends its new manifest when an
   ECU changed.

An update that must wait is tried again at a later step (the vehicle then forgets its ETag,
so the next check-in re-verifies the metadata before anything installs). A vehicle that
waits for its preconditions asks its driver: before its next step it parks with
``park_probability`` and, parked, charges ``charge_pct_per_step``. A verification failure
(:class:`simulator.ota_client.UptaneError`) is reported as ``failed`` with
``error_code = "uptane_" + code`` for every update the check-in offered, and nothing
installs; only ``unavailable`` (a repository could not be reached) is left for the next step
without a report, because it says nothing about the update.

Reports carry a fresh ``report_id`` and a per-vehicle monotonic ``seq`` and go to
``POST /v1/ota/reports``, or, for vehicles given a :class:`KafkaReports`, to
``ota.reports.v1`` (keyed by VIN). Every report is also written to a shared :class:`FleetLog`
*before* it is sent, so the log's order is causal: a report the backend acted on comes, in
the log, before every report that its action made possible (the next wave's first download,
for example).

Trust anchors: pass each repository's root (``director_root``, ``image_root``) as a factory
would provision them. Without them the vehicle trusts on first use: its first step fetches
``/v1/ota/image/1.root.json`` and ``/v1/ota/director/<vin>/1.root.json`` with its own
credential. Fine for a simulator; a real vehicle must be provisioned, or a server that is
compromised on the first day could hand it roots of its own.

:func:`run_fleet` steps many vehicles concurrently (threads; a vehicle never runs two steps
at once) until a condition holds or a timeout passes, and returns counts (:class:`FleetRun`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from tuf.api import exceptions as tuf_errors
from tuf.ngclient.fetcher import FetcherInterface

from ota.windows import WindowSpecError, install_decision, parse_windows
from simulator.ota_client import EcuState, UptaneClient, UptaneError, VerifiedUpdate

log = logging.getLogger(__name__)

API_PREFIX = "/v1/ota"
SUCCEEDED, FAILED, ROLLED_BACK = "succeeded", "failed", "rolled_back"
RESULT_STATES = frozenset({SUCCEEDED, FAILED, ROLLED_BACK})
INVALID_CONDITIONS = "invalid_conditions"
"""Error code of an update whose signed conditions (windows, deadline, mode) the vehicle
cannot read: it installs only what it can check."""

T = TypeVar("T")


# --- HTTP for ngclient ---------------------------------------------------------------------------


class AuthFetcher(FetcherInterface):
    """ngclient's network layer over httpx with the vehicle's bearer token. An HTTP error
    status becomes :class:`tuf.api.exceptions.DownloadHTTPError` with its status (ngclient
    reads a 403 or 404 for the next root version as "no newer root"); a timeout becomes
    ``SlowRetrievalError``; other transport errors become ``DownloadError``."""

    def __init__(self, http: httpx.Client, token: str, *, chunk_size: int = 64 * 1024) -> None:
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}"}
        self._chunk_size = chunk_size

    def _fetch(self, url: str) -> Iterator[bytes]:
        request = self._http.build_request("GET", url, headers=self._headers)
        try:
            response = self._http.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise tuf_errors.SlowRetrievalError(f"{url}: {exc}") from exc
        if response.status_code >= 400:
            response.close()
            raise tuf_errors.DownloadHTTPError(
                f"{url}: HTTP {response.status_code}", response.status_code
            )
        return self._chunks(url, response)

    def _chunks(self, url: str, response: httpx.Response) -> Iterator[bytes]:
        # A generator: errors while streaming must still reach ngclient as DownloadErrors
        # (FetcherInterface.fetch wraps only what _fetch itself raises).
        try:
            yield from response.iter_bytes(self._chunk_size)
        except httpx.TimeoutException as exc:
            raise tuf_errors.SlowRetrievalError(f"{url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"{url}: {exc}") from exc
        finally:
            response.close()


# --- what vehicles report and where --------------------------------------------------------------


@dataclass(frozen=True)
class OtaEvent:
    """One report as a vehicle sent it; ``order`` is its position in the fleet's log."""

    order: int
    at: float
    """``time.monotonic()`` when it was logged (just before sending)."""
    vin: str
    campaign_id: str
    ecu_id: str
    attempt: int
    seq: int
    state: str
    error_code: str | None
    channel: str
    """``http`` or ``kafka``."""


class FleetLog:
    """Every report of every vehicle, in one causal order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._order = itertools.count(1)
        self._events: list[OtaEvent] = []

    def record(self, **fields: Any) -> OtaEvent:
        with self._lock:
            event = OtaEvent(order=next(self._order), at=time.monotonic(), **fields)
            self._events.append(event)
            return event

    @property
    def events(self) -> list[OtaEvent]:
        with self._lock:
            return list(self._events)

    def of_campaign(self, campaign_id: str) -> list[OtaEvent]:
        return [event for event in self.events if event.campaign_id == campaign_id]


class KafkaReports:
    """Sends install reports to ``ota.reports.v1`` from any thread: one aiokafka producer on
    an event loop of its own. :meth:`send` returns once the broker acknowledged the report
    (``acks=all``), so one vehicle's reports keep their order. Use as a context manager."""

    def __init__(self, bootstrap_servers: str, topic: str, *, timeout_s: float = 30.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.timeout_s = timeout_s
        self.sent = 0
        self._sent_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: AIOKafkaProducer | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="ota-kafka-reports", daemon=True
        )
        self._thread.start()
        self._producer = self._call(self._start_producer())

    async def _start_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=0
        )
        await producer.start()
        return producer

    def send(self, vin: str, report: Mapping[str, Any]) -> None:
        if self._producer is None:
            raise RuntimeError("KafkaReports.start() first")
        value = orjson.dumps({"vin": vin, **report})
        self._call(self._producer.send_and_wait(self.topic, value=value, key=vin.encode()))
        with self._sent_lock:
            self.sent += 1

    def close(self) -> None:
        loop, thread, producer = self._loop, self._thread, self._producer
        self._loop = self._thread = self._producer = None
        if loop is None or thread is None:
            return
        try:
            if producer is not None:
                asyncio.run_coroutine_threadsafe(producer.stop(), loop).result(self.timeout_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=self.timeout_s)
            loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self.timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --- install outcomes ----------------------------------------------------------------------------

InstallResult = tuple[str, str | None]
"""``(state, error_code)``: ``("succeeded", None)``, ``("failed", "E_FLASH_VERIFY")`` ..."""
InstallOutcome = Callable[["SimulatedOtaVehicle", VerifiedUpdate], InstallResult]


def install_succeeds(vehicle: SimulatedOtaVehicle, update: VerifiedUpdate) -> InstallResult:
    return SUCCEEDED, None


def fails_on_hardware(
    hardware_id: str,
    *,
    error_code: str = "E_FLASH_VERIFY",
    state: str = FAILED,
    version: str | None = None,
) -> InstallOutcome:
    """A bad release: installs fail (or roll back) on ECUs of ``hardware_id``, only for images
    of ``version`` when given, and succeed everywhere else."""
    if state not in (FAILED, ROLLED_BACK):
        raise ValueError("a failing install ends failed or rolled_back")

    def outcome(vehicle: SimulatedOtaVehicle, update: VerifiedUpdate) -> InstallResult:
        if update.hardware_identifier == hardware_id and (
            version is None or update.image_custom.get("version") == version
        ):
            return state, error_code
        return SUCCEEDED, None

    return outcome


# --- the vehicle ---------------------------------------------------------------------------------


@dataclass
class OtaEcu:
    """What one ECU runs when the simulation starts."""

    hardware_id: str
    image: str | None = None
    version: str | None = None
    release_counter: int = 0


@dataclass(frozen=True)
class _Offer:
    """An update the vehicle works on: its campaign, ECU and attempt."""

    campaign_id: str
    ecu_id: str
    attempt: int


@dataclass
class _Step:
    outcomes: Counter[str] = field(default_factory=Counter)
    ecus_changed: bool = False


class SimulatedOtaVehicle:
    """One vehicle: its ECUs, its state (state of charge, parked), its driver's willingness
    to accept soft updates, and its Uptane client. Not thread-safe: one step at a time
    (:func:`run_fleet` sees to it)."""

    def __init__(
        self,
        vin: str,
        token: str,
        ecus: Mapping[str, OtaEcu],
        *,
        base_url: str,
        http: httpx.Client,
        cache_dir: Path,
        director_root: bytes | None = None,
        image_root: bytes | None = None,
        time_zone: str = "UTC",
        soc_pct: float = 80.0,
        parked: bool = True,
        park_probability: float = 0.5,
        charge_pct_per_step: float = 10.0,
        consent_probability: float = 1.0,
        install_outcome: InstallOutcome = install_succeeds,
        kafka: KafkaReports | None = None,
        fleet_log: FleetLog | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.vin = vin
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.cache_dir = cache_dir
        self.time_zone = time_zone
        self.soc_pct = soc_pct
        self.parked = parked
        self.park_probability = park_probability
        self.charge_pct_per_step = charge_pct_per_step
        self.consent_probability = consent_probability
        self.install_outcome = install_outcome
        self.kafka = kafka
        self.fleet_log = fleet_log if fleet_log is not None else FleetLog()
        self.rng = rng or random.Random(vin)
        self.clock = clock
        self.ecus = {
            ecu_id: EcuState(ecu.hardware_id, ecu.image, ecu.release_counter)
            for ecu_id, ecu in ecus.items()
        }
        """What each ECU runs (shared with the Uptane client, which checks rollbacks on it)."""
        self.versions: dict[str, str | None] = {ecu_id: e.version for ecu_id, e in ecus.items()}
        self.installed_images: list[tuple[str, str]] = []
        """``(ecu_id, filename)`` of every successful install, in order."""
        self.check_ins = 0
        """Check-ins answered (200 or 304)."""
        self.refused_reports: list[str] = []
        """Reports the API answered with a 4xx (status, state and the API's reason)."""
        self._headers = {"Authorization": f"Bearer {token}"}
        self._fetcher = AuthFetcher(http, token)
        self._roots = (director_root, image_root)
        self._client: UptaneClient | None = None
        self._etag: str | None = None
        self._seq = 0
        self._finished: set[_Offer] = set()
        self._manifest_sent = False

    @property
    def channel(self) -> str:
        """How this vehicle reports: ``http`` or ``kafka``."""
        return "http" if self.kafka is None else "kafka"

    @property
    def api(self) -> str:
        return f"{self.base_url}{API_PREFIX}"

    # -- one step --

    def step(self) -> Counter[str]:
        """Wake up, check in and act on what the check-in and the Director say. Returns
        counts of what happened: ``not_modified`` (304), ``idle`` (nothing to do),
        ``installed``, ``failed`` (failed or rolled back), ``rejected`` (verification failed),
        ``deferred`` and why (``deferred_window``, ``deferred_preconditions``,
        ``deferred_consent``, ``unavailable``), ``report_refused`` (the API answered a report
        with a 4xx; also kept in :attr:`refused_reports`). HTTP and Kafka failures raise: the
        step is cut short and a later one starts over (reports are idempotent)."""
        step = _Step()
        client = self._uptane_client()
        if not self._manifest_sent:
            self._send_manifest()
        headers = dict(self._headers)
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        response = self.http.get(f"{self.api}/check-in", headers=headers)
        if response.status_code == 304:
            self.check_ins += 1
            step.outcomes["not_modified"] += 1
            return step.outcomes
        response.raise_for_status()
        self.check_ins += 1
        etag = response.headers.get("etag")
        offers = [
            _Offer(str(u["campaign_id"]), str(u["ecu_id"]), int(u["attempt"]))
            for u in response.json()["updates"]
        ]
        pending = [offer for offer in offers if offer not in self._finished]
        if not pending:
            self._etag = etag
            step.outcomes["idle"] += 1
            return step.outcomes
        self._etag = None  # until every offer is settled, each step verifies again
        try:
            updates = client.check()
        except UptaneError as exc:
            self._verification_failed(exc, pending, step)
        else:
            for update in updates:
                self._take(client, update, step)
            if not step.outcomes["deferred"]:
                self._etag = etag
        if step.ecus_changed:
            self._send_manifest()
        if not step.outcomes:
            step.outcomes["idle"] += 1
        return step.outcomes

    def _take(self, client: UptaneClient, update: VerifiedUpdate, step: _Step) -> None:
        offer = _offer_of(update)
        if offer is None:
            # Verified, but without the campaign fields the vehicle cannot report on it.
            log.warning("%s: %s carries no campaign_id/attempt", self.vin, update.filename)
            step.outcomes["unreportable"] += 1
            return
        if offer in self._finished:
            return  # reported already (over Kafka the backend may not have applied it yet)
        waiting = self._must_wait(update)
        if waiting == INVALID_CONDITIONS:
            self._finish(step, offer, FAILED, INVALID_CONDITIONS, "unreadable signed conditions")
            step.outcomes["failed"] += 1
            return
        if waiting is not None:
            step.outcomes["deferred"] += 1
            step.outcomes[f"deferred_{waiting}"] += 1
            if waiting == "preconditions":
                self._ask_driver_to_park_and_charge()
            return
        self._report(step, offer, "downloading")
        try:
            client.download(update)  # length and hashes verified before a byte is kept
        except UptaneError as exc:
            if exc.code == UptaneError.UNAVAILABLE:
                step.outcomes["deferred"] += 1
                step.outcomes["unavailable"] += 1
                return
            self._finish(step, offer, FAILED, f"uptane_{exc.code}", exc.detail)
            step.outcomes["rejected"] += 1
            return
        self._report(step, offer, "installing")
        state, error_code = self.install_outcome(self, update)
        if state not in RESULT_STATES:
            raise ValueError(f"install_outcome returned {state!r}")
        if state == SUCCEEDED:
            client.installed(update)
            version = update.image_custom.get("version")
            self.versions[update.ecu_identifier] = version if isinstance(version, str) else None
            self.installed_images.append((update.ecu_identifier, update.filename))
            step.ecus_changed = True
            step.outcomes["installed"] += 1
        else:
            step.outcomes["failed"] += 1
        detail = None if state == SUCCEEDED else f"{state} on {update.hardware_identifier}"
        self._finish(step, offer, state, error_code, detail)

    def _must_wait(self, update: VerifiedUpdate) -> str | None:
        """Why the update cannot install now (``window``, ``preconditions``, ``consent``),
        :data:`INVALID_CONDITIONS`, or None. All of it comes from the signed Director
        metadata, not from the check-in."""
        custom = update.custom
        try:
            windows = parse_windows(custom.get("maintenance_windows") or [])
            deadline_text = custom.get("deadline")
            deadline = datetime.fromisoformat(deadline_text) if deadline_text else None
            mode = str(custom.get("mode") or "soft")
            decision = install_decision(mode, windows, self.time_zone, self.clock(), deadline)
        except (WindowSpecError, ValueError, TypeError):
            return INVALID_CONDITIONS
        if not decision.window_open:
            return "window"
        if update.unmet_preconditions(soc_pct=self.soc_pct, parked=self.parked):
            return "preconditions"
        if decision.needs_consent and self.rng.random() >= self.consent_probability:
            return "consent"
        return None

    def _verification_failed(self, exc: UptaneError, offers: Sequence[_Offer], step: _Step) -> None:
        if exc.code == UptaneError.UNAVAILABLE:
            step.outcomes["deferred"] += 1
            step.outcomes["unavailable"] += 1
            return
        # The signed metadata cannot be trusted, so the check-in's (unsigned) summary is all
        # the vehicle knows of what it was offered: it reports against that.
        for offer in offers:
            self._finish(step, offer, FAILED, f"uptane_{exc.code}", exc.detail)
            step.outcomes["rejected"] += 1

    def _ask_driver_to_park_and_charge(self) -> None:
        if not self.parked and self.rng.random() < self.park_probability:
            self.parked = True
        if self.parked:
            self.soc_pct = min(100.0, self.soc_pct + self.charge_pct_per_step)

    # -- reports and manifest --

    def _finish(
        self, step: _Step, offer: _Offer, state: str, error_code: str | None, detail: str | None
    ) -> None:
        self._report(step, offer, state, error_code=error_code, detail=detail)
        self._finished.add(offer)

    def _report(
        self,
        step: _Step,
        offer: _Offer,
        state: str,
        *,
        error_code: str | None = None,
        detail: str | None = None,
    ) -> None:
        self._seq += 1
        report: dict[str, Any] = {
            "report_id": uuid.uuid4().hex,
            "campaign_id": offer.campaign_id,
            "ecu_id": offer.ecu_id,
            "attempt": offer.attempt,
            "seq": self._seq,
            "state": state,
        }
        if error_code is not None:
            report["error_code"] = error_code[:64]
        if detail is not None:
            report["detail"] = detail[:500]
        self.fleet_log.record(
            vin=self.vin,
            campaign_id=offer.campaign_id,
            ecu_id=offer.ecu_id,
            attempt=offer.attempt,
            seq=self._seq,
            state=state,
            error_code=error_code,
            channel=self.channel,
        )
        if self.kafka is not None:
            self.kafka.send(self.vin, report)
            return
        response = self.http.post(f"{self.api}/reports", json=report, headers=self._headers)
        if response.status_code >= 500:
            response.raise_for_status()
        if response.status_code >= 400:
            # The API will never take this report: note it and go on.
            step.outcomes["report_refused"] += 1
            self.refused_reports.append(f"{response.status_code} {state}: {response.text[:200]}")

    def manifest(self) -> dict[str, Any]:
        """The version manifest as ``PUT /v1/ota/manifest`` takes it."""
        return {
            "ecus": [
                {
                    "ecu_id": ecu_id,
                    "hardware_id": ecu.hardware_id,
                    "image": ecu.image,
                    "version": self.versions.get(ecu_id),
                    "release_counter": ecu.release_counter,
                }
                for ecu_id, ecu in self.ecus.items()
            ]
        }

    def _send_manifest(self) -> None:
        response = self.http.put(
            f"{self.api}/manifest", json=self.manifest(), headers=self._headers
        )
        response.raise_for_status()
        self._manifest_sent = True

    def _uptane_client(self) -> UptaneClient:
        if self._client is None:
            director_root, image_root = self._roots
            self._client = UptaneClient(
                self.vin,
                self.ecus,
                director_url=f"{self.api}/director",
                image_repo_url=f"{self.api}/image",
                director_root=director_root or self._fetch_root(f"director/{self.vin}"),
                image_root=image_root or self._fetch_root("image"),
                cache_dir=self.cache_dir,
                fetcher=self._fetcher,
            )
        return self._client

    def _fetch_root(self, repository: str) -> bytes:
        """Trust on first use (see the module docstring)."""
        response = self.http.get(f"{self.api}/{repository}/1.root.json", headers=self._headers)
        response.raise_for_status()
        return response.content


def _offer_of(update: VerifiedUpdate) -> _Offer | None:
    campaign_id, attempt = update.custom.get("campaign_id"), update.custom.get("attempt")
    if not isinstance(campaign_id, str) or type(attempt) is not int:
        return None
    return _Offer(campaign_id, update.ecu_identifier, attempt)


# --- the fleet -----------------------------------------------------------------------------------


@dataclass
class FleetRun:
    """What :func:`run_fleet` did."""

    elapsed_s: float = 0.0
    finished: bool = False
    """``until()`` became true before the timeout."""
    steps: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """Summed over every step (see :meth:`SimulatedOtaVehicle.step`)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Steps that raised, by exception class (the vehicle tries again at its next step)."""
    error_samples: list[str] = field(default_factory=list)
    """The first few of them."""


def run_fleet(
    vehicles: Sequence[SimulatedOtaVehicle],
    until: Callable[[], bool],
    timeout_s: float,
    concurrency: int = 8,
    *,
    poll_interval_s: float = 2.0,
    retry_after_s: float = 0.25,
    check_every_s: float = 0.25,
) -> FleetRun:
    """Step ``vehicles`` on ``concurrency`` threads until ``until()`` (asked every
    ``check_every_s``, from this thread) is true or ``timeout_s`` passed; steps in flight then
    finish before it returns. A vehicle with nothing to do (or waiting for a maintenance
    window) checks in again after ``poll_interval_s``; one that waits for its conditions or
    its driver, had a failed step or has just acted, after ``retry_after_s``."""
    run = FleetRun()
    started = time.monotonic()
    deadline = started + timeout_s
    due = [(started, index) for index in range(len(vehicles))]  # a heap of (due time, vehicle)
    heapq.heapify(due)
    running: dict[Future[Counter[str]], int] = {}
    last_check = float("-inf")
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ota-vehicle") as pool:
        while True:
            now = time.monotonic()
            if now - last_check >= check_every_s:
                last_check = now
                if until():
                    run.finished = True
                    break
            if now >= deadline:
                break
            while due and due[0][0] <= now and len(running) < concurrency:
                _, index = heapq.heappop(due)
                running[pool.submit(vehicles[index].step)] = index
            # Sleep until a step ends, the next vehicle is due (when a thread is free for it),
            # the next look at until(), or the deadline; never spin.
            free = len(running) < concurrency
            next_due = due[0][0] - now if due and free else check_every_s
            timeout = max(0.001, min(check_every_s, next_due, deadline - now))
            if not running:
                time.sleep(timeout)  # wait() on no futures would return at once
                continue
            done, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                idle = _collect(run, future)
                pause = poll_interval_s if idle else retry_after_s
                heapq.heappush(due, (time.monotonic() + pause, index))
        for future in list(running):
            future.exception()  # waits for it
            _collect(run, future)
    run.elapsed_s = time.monotonic() - started
    return run


# Steps after which a vehicle may wait a whole polling interval: nothing to do, or only updates
# whose maintenance window is closed (it opens in minutes or hours, not in a moment).
_IDLE = frozenset({"not_modified", "idle", "deferred", "deferred_window"})


def _collect(run: FleetRun, future: Future[Counter[str]]) -> bool:
    """Count a finished step; True when the vehicle has nothing to do soon."""
    run.steps += 1
    error = future.exception()
    if error is None:
        outcomes = future.result()
        run.outcomes.update(outcomes)
        return set(outcomes) <= _IDLE and outcomes["deferred"] == outcomes["deferred_window"]
    run.errors[type(error).__name__] += 1
    if len(run.error_samples) < 10:
        run.error_samples.append(f"{type(error).__name__}: {error}")
    return False
