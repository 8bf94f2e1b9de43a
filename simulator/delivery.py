"""From samples to messages, with the imperfections of real vehicle connectivity.

A :class:`VehicleStream` batches one vehicle's samples into :class:`TelemetryMessage` s (the
contract in ``core.telemetry``) and decides, from a random stream of its own (so the physics
never changes when imperfections are switched on), what goes out when:

* **duplicates**: a transmitted message is sent once more, unchanged (same ``message_id``,
  same ``sent_at``), right after the vehicle's next message, as a retry after a lost
  acknowledgement would be;
* **late data**: the vehicle loses its connection for a while (``outage_s``), stores its
  messages and sends the backlog in a burst when it is back, with ``sent_at`` at the time of
  the burst, long after the samples' ``ts``. A vehicle still offline at the end of a run sends
  its backlog then;
* **malformed records**: an extra message (its own ``seq`` and ``message_id``) that repeats
  the last sample with one defect: an unknown signal, an out-of-range value or a value of
  the wrong type. Each comes out as a :class:`Delivery` with ``kind=MALFORMED`` and the
  defect in ``reason``, so tests know exactly which ids are bad.

``message_id`` is a UUID5 of (VIN, start time, run seed, seq): unique per VIN, deterministic
for a seed and start, and different between two runs that start at different times (so a
second demo run against the same database is not swallowed by idempotent ingest).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from core.telemetry import Sample, TelemetryMessage
from simulator import vss
from simulator.fleet import VehicleProfile
from simulator.vehicle import VehicleSim

MESSAGE_ID_NAMESPACE = uuid.UUID("6f3c1f2e-53a4-4bd4-9a39-6c1d6b8e2f10")
UNKNOWN_SIGNAL = "Vehicle.Cabin.FluxCapacitor.Charge"
"""Looks like a VSS path; is not one."""
OUT_OF_RANGE_LATITUDE = 123.456789
"""VSS bounds latitude to [-90, 90]."""
WRONG_TYPE_SPEED = "fast"
"""``Vehicle.Speed`` is a float."""


class DeliveryKind(StrEnum):
    NORMAL = "normal"
    DUPLICATE = "duplicate"
    LATE = "late"
    MALFORMED = "malformed"


class MalformedKind(StrEnum):
    UNKNOWN_SIGNAL = "unknown_signal"
    OUT_OF_RANGE = "out_of_range"
    WRONG_TYPE = "wrong_type"


@dataclass(frozen=True)
class DeliveryConfig:
    """Connectivity imperfections; all off by default."""

    duplicate_rate: float = 0.0
    """Probability that a transmitted message is sent a second time."""
    late_rate: float = 0.0
    """Share of messages that arrive late: the vehicle goes offline now and then for
    ``outage_s`` and sends the stored messages when it is back (store-and-forward)."""
    outage_s: tuple[float, float] = (120.0, 1800.0)
    """Range of an outage's length in simulated seconds."""
    malformed_rate: float = 0.0
    """Probability, per message, of an extra malformed message."""
    malformed_kinds: tuple[MalformedKind, ...] = tuple(MalformedKind)

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "late_rate", "malformed_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if not 0 < self.outage_s[0] <= self.outage_s[1]:
            raise ValueError("outage_s must be (low, high) with 0 < low <= high")
        if not self.malformed_kinds:
            raise ValueError("malformed_kinds must not be empty")


@dataclass(frozen=True)
class SimConfig:
    sample_interval_s: float = 1.0
    samples_per_message: int = 10
    parked_sample_interval_s: float | None = None
    """Sample less often while parked and not charging (None: every ``sample_interval_s``)."""
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    def __post_init__(self) -> None:
        if self.samples_per_message < 1:
            raise ValueError("samples_per_message must be >= 1")
        if self.sample_interval_s <= 0:
            raise ValueError("sample_interval_s must be > 0")


@dataclass(frozen=True)
class Delivery:
    """One transmission of a message."""

    message: TelemetryMessage
    kind: DeliveryKind
    at_ms: int
    """Simulated time of the transmission (epoch ms)."""
    reason: MalformedKind | None = None


class VehicleStream:
    """One vehicle's messages and transmissions, in order."""

    def __init__(
        self,
        profile: VehicleProfile,
        *,
        start_ms: int,
        config: SimConfig | None = None,
        run_seed: int = 0,
        first_seq: int = 0,
    ) -> None:
        self.config = config or SimConfig()
        self.profile = profile
        self.vin = profile.vin
        self.start_ms = int(start_ms)
        self.run_seed = run_seed
        self.sim = VehicleSim(
            profile,
            start_ms=start_ms,
            run_seed=run_seed,
            sample_interval_s=self.config.sample_interval_s,
            parked_sample_interval_s=self.config.parked_sample_interval_s,
        )
        seed = [profile.seed, run_seed & 0xFFFF_FFFF_FFFF_FFFF, 3]
        self.rng = np.random.default_rng(np.random.SeedSequence(seed))
        self.seq = first_seq
        self.last_ts: int | None = None
        """``ts`` of the newest sample generated."""
        span_ms = self.sim.dt_ms * self.config.samples_per_message
        self._max_latency_ms = int(max(21, min(400, span_ms // 2)))
        # Chance per message of going offline such that the expected share of messages sent
        # late is ``late_rate``: r = M / (1/p + M), M = messages per outage.
        rate = self.config.delivery.late_rate
        per_outage = sum(self.config.delivery.outage_s) / 2 * 1000 / span_ms
        self._p_offline = 1.0 if rate >= 1 else min(1.0, rate / (per_outage * (1 - rate)))
        self._offline_until: int | None = None
        self._backlog: list[tuple[int, str, list[Sample]]] = []
        self._pending_duplicates: list[Delivery] = []

    def _message_id(self, seq: int) -> str:
        name = f"{self.vin}/{self.start_ms}/{self.run_seed}/{seq}"
        return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))

    def _next_seq(self) -> tuple[int, str]:
        seq = self.seq
        self.seq += 1
        return seq, self._message_id(seq)

    def step(self, end_ms: int | None = None) -> list[Delivery] | None:
        """Generate the next message and return what is transmitted now (possibly nothing,
        while offline). None when it would be sent at ``end_ms`` or later: the stream is at
        its end (call :meth:`flush`)."""
        cfg = self.config.delivery
        samples = self.sim.advance(self.config.samples_per_message)
        last_ts = samples[-1].ts
        sent_at = last_ts + int(self.rng.integers(20, self._max_latency_ms))
        if end_ms is not None and sent_at >= end_ms:
            return None
        self.last_ts = last_ts
        # Draw every decision for every message, so one rate never shifts another's choices.
        u_dup, u_late, u_bad = self.rng.random(3)
        outage_s = float(self.rng.uniform(*cfg.outage_s))
        bad_kind = cfg.malformed_kinds[int(self.rng.integers(len(cfg.malformed_kinds)))]
        seq, message_id = self._next_seq()
        out: list[Delivery] = []
        if self._offline_until is not None:
            if last_ts < self._offline_until:
                self._backlog.append((seq, message_id, samples))
                return out
            out.extend(self._burst(sent_at))
        elif u_late < self._p_offline:
            self._offline_until = last_ts + int(outage_s * 1000)
            self._backlog.append((seq, message_id, samples))
            return out
        message = TelemetryMessage(self.vin, message_id, seq, samples, sent_at=sent_at)
        out.append(Delivery(message, DeliveryKind.NORMAL, sent_at))
        out.extend(self._release_duplicates(sent_at))
        if u_dup < cfg.duplicate_rate:
            self._pending_duplicates.append(Delivery(message, DeliveryKind.DUPLICATE, sent_at))
        if u_bad < cfg.malformed_rate:
            bad_seq, bad_id = self._next_seq()
            bad = TelemetryMessage(
                self.vin, bad_id, bad_seq, [_corrupt(samples[-1], bad_kind)], sent_at=sent_at
            )
            out.append(Delivery(bad, DeliveryKind.MALFORMED, sent_at, bad_kind))
        return out

    def _burst(self, at_ms: int) -> list[Delivery]:
        out = [
            Delivery(TelemetryMessage(self.vin, mid, seq, samples, sent_at=at_ms),
                     DeliveryKind.LATE, at_ms)
            for seq, mid, samples in self._backlog
        ]  # fmt: skip
        self._backlog = []
        self._offline_until = None
        return out

    def _release_duplicates(self, at_ms: int) -> list[Delivery]:
        out = [Delivery(d.message, DeliveryKind.DUPLICATE, at_ms) for d in self._pending_duplicates]
        self._pending_duplicates = []
        return out

    def flush(self, at_ms: int) -> list[Delivery]:
        """End of the run: the backlog of a vehicle still offline and pending re-sends."""
        return self._burst(at_ms) + self._release_duplicates(at_ms)


def _corrupt(sample: Sample, kind: MalformedKind) -> Sample:
    signals = dict(sample.signals)
    match kind:
        case MalformedKind.UNKNOWN_SIGNAL:
            signals[UNKNOWN_SIGNAL] = 1.21
        case MalformedKind.OUT_OF_RANGE:
            signals[vss.LATITUDE] = OUT_OF_RANGE_LATITUDE
        case MalformedKind.WRONG_TYPE:
            signals[vss.SPEED] = WRONG_TYPE_SPEED
    return Sample(ts=sample.ts, signals=signals)
