"""Pass/fail limits of the Locust load test (``make loadtest``), per named request.

Every request the scenarios send has a ``name`` (method and route template, never a VIN or an
id) and a :class:`Threshold` here: the 95th percentile of its response time and the share of
failed requests (transport errors, 5xx, unexpected 4xx) it may reach. A run fails when any
request passes either limit, or when a request listed here was never sent (a scenario that
silently stopped working must not pass as "fast"). Both ``loadtest/locustfile.py`` (its
``quitting`` listener sets Locust's exit code) and ``loadtest/run_locust.py`` (from the
stats CSV, with a table) evaluate these; ``docs/loadtest.md`` explains them.

How the numbers were chosen (``docs/performance.md``, "Load test (Locust, issue 7)"): the
default run (50 users, 60 s) on a 2-core machine, where the API, the Kafka broker, three
workers and Locust share the two cores (and, when it was measured, other workloads too),
gave a p95 of 35-95 ms for telemetry, up to about 550 ms for the OTA check-in (its write
waits for SQLite's single writer) and 44-430 ms for the rest. The limits are what a caller
would notice (a person at about a second, an insurer pulling thousands of items at a few
hundred milliseconds each, a vehicle long before its 10 s timeout) and at least about three
times those measurements, so a limit that trips is a regression (a lock held too long, a
query that lost its index, blocking work on the event loop), not noise from a busy machine.
A p95 is only judged from :data:`MIN_REQUESTS_FOR_P95` requests on. The error limit is 1 %
everywhere: none of these requests should fail at this load at all, but a single race in a
short run (a slot taken by the services worker at the same moment) must not make the build
flaky; every failure is listed by ``run_locust`` whatever its ratio.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Threshold:
    kind: str
    """The user kind (scenario module) that sends the request."""
    p95_ms: float
    max_error_ratio: float
    why: str


THRESHOLDS: Mapping[str, Threshold] = {
    # Vehicles: the answer waits for Kafka's acks=all, so it holds one broker round trip.
    "POST /v1/telemetry": Threshold(
        "vehicles", 500.0, 0.01,
        "202 after the broker acknowledged the write; vehicles retry after 10 s, but a slow "
        "ingest backs up every vehicle's store-and-forward buffer",
    ),
    "GET /v1/ota/check-in": Threshold(
        "vehicles", 1500.0, 0.01,
        "reads (and marks notified) the vehicle's install records and joins late vehicles to "
        "running campaigns: a database write per vehicle wake-up, waiting for SQLite's one "
        "writer; a background call of the vehicle, nobody waits for it",
    ),
    "POST /v1/ota/reports": Threshold(
        "vehicles", 1000.0, 0.01,
        "stores the report under the campaign's row lock and, on success, rewrites the "
        "vehicle's Director metadata",
    ),
    # Service centers: people in a workshop tool.
    "GET /v1/bookings": Threshold(
        "service_centers", 1000.0, 0.01, "a center's queue view; a person waits for it",
    ),
    "POST /v1/bookings/{booking_id}/accept": Threshold(
        "service_centers", 1000.0, 0.01, "one click in the center's tool",
    ),
    "GET /v1/service-centers/{center_id}/slots": Threshold(
        "service_centers", 1000.0, 0.01, "free slots of the next 7 days for a reschedule",
    ),
    "POST /v1/bookings/{booking_id}/reschedule": Threshold(
        "service_centers", 1000.0, 0.01,
        "claims a bay in the new slot under the center's lock; one click",
    ),
    # Fleet operators: a dashboard that polls.
    "GET /v1/ota/campaigns": Threshold(
        "operators", 1000.0, 0.01, "the campaign list of a dashboard",
    ),
    "GET /v1/ota/campaigns/{campaign_id}": Threshold(
        "operators", 1000.0, 0.01,
        "per-wave progress and failure groups: aggregates over every install record",
    ),
    # Insurers: machine-to-machine pulls of signed scores.
    "GET /v1/partner/ubi/scores": Threshold(
        "insurers", 1500.0, 0.01,
        "a page of 50 signed scores: consent filter, pseudonyms of every consented subject "
        "to order the page, an audit write",
    ),
    "GET /v1/partner/ubi/scores/{pseudonym}": Threshold(
        "insurers", 500.0, 0.01,
        "one signed score; an insurer's nightly pull asks for thousands in a row",
    ),
}

DEFAULT_THRESHOLD = Threshold(
    "other", 1000.0, 0.01, "a request without a limit of its own (add one above)"
)
"""For a request that is not listed: it still has limits."""


@dataclass(frozen=True)
class RequestStats:
    """One row of Locust's stats: a named request's counts and response times (ms)."""

    method: str
    name: str
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def key(self) -> str:
        return f"{self.method} {self.name}"

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


MIN_REQUESTS_FOR_P95 = 20
"""Below this many requests a "p95" is the slowest one or two: one hiccup (a GC pause, a
burst from another process) would fail the run. Such a request is still judged on its
error ratio and on having been answered."""


@dataclass(frozen=True)
class Verdict:
    key: str
    threshold: Threshold
    stats: RequestStats | None
    """None: the request was never sent."""
    breaches: tuple[str, ...]
    p95_judged: bool = True

    @property
    def passed(self) -> bool:
        return not self.breaches


@dataclass(frozen=True)
class Evaluation:
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def breaches(self) -> list[str]:
        return [f"{v.key}: {b}" for v in self.verdicts for b in v.breaches]


def evaluate(
    stats: Iterable[RequestStats],
    thresholds: Mapping[str, Threshold] = THRESHOLDS,
    *,
    default: Threshold = DEFAULT_THRESHOLD,
    require_all: bool = True,
) -> Evaluation:
    """Each request against its threshold (``default`` for unlisted ones); with
    ``require_all``, a listed request with no successful answer is a breach too."""
    by_key = {s.key: s for s in stats}
    verdicts = []
    for key, row in by_key.items():
        verdicts.append(_judge(key, thresholds.get(key, default), row))
    if require_all:
        for key, threshold in thresholds.items():
            if key not in by_key:
                verdicts.append(Verdict(key, threshold, None, ("never sent",)))
    verdicts.sort(key=lambda v: (_kind_order(v.threshold.kind), v.key))
    return Evaluation(verdicts)


def _judge(key: str, threshold: Threshold, row: RequestStats) -> Verdict:
    breaches = []
    if row.requests == 0 or row.failures >= row.requests:
        breaches.append("no successful request")
    p95_judged = row.requests >= MIN_REQUESTS_FOR_P95
    if p95_judged and row.p95_ms is not None and row.p95_ms > threshold.p95_ms:
        breaches.append(f"p95 {row.p95_ms:g} ms > {threshold.p95_ms:g} ms")
    if row.error_ratio > threshold.max_error_ratio:
        breaches.append(
            f"error ratio {row.error_ratio:.2%} > {threshold.max_error_ratio:.2%} "
            f"({row.failures} of {row.requests})"
        )
    return Verdict(key, threshold, row, tuple(breaches), p95_judged)


KINDS = ("vehicles", "service_centers", "operators", "insurers", "other")


def _kind_order(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)


def read_stats_csv(path: Path) -> list[RequestStats]:
    """The per-request rows of Locust's ``<prefix>_stats.csv`` (not the ``Aggregated`` row)."""
    rows = []
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            if not record.get("Type") or record.get("Name") == "Aggregated":
                continue
            rows.append(
                RequestStats(
                    method=record["Type"],
                    name=record["Name"],
                    requests=int(record["Request Count"]),
                    failures=int(record["Failure Count"]),
                    requests_per_s=_number(record["Requests/s"]) or 0.0,
                    p50_ms=_number(record["50%"]),
                    p95_ms=_number(record["95%"]),
                    p99_ms=_number(record["99%"]),
                )
            )
    return rows


def _number(text: str | None) -> float | None:
    """Locust writes ``N/A`` for a percentile without requests."""
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None
