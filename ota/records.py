"""Install records: the state of one campaign's update of one ECU of one vehicle.

Pure logic, no database: the service loads a row into a :class:`RecordState`, calls
:func:`apply_report` (or :func:`notify`, :func:`cancel`, :func:`retry`) and writes back
``outcome.record`` when ``outcome.changed``. Because every function is a pure function of the
stored state and its input, concurrent deliveries need only the usual row lock (or a
compare-and-set on the row) around load, apply and store.

States
======

``assigned`` (in the plan) → ``notified`` (the vehicle fetched Director metadata listing the
image) → ``downloading`` → ``installing`` → one final state: ``succeeded``, ``failed``,
``rolled_back`` (installed, then reverted to the previous image) or ``cancelled`` (by an
operator). Vehicles report ``downloading``, ``installing``, ``succeeded``, ``failed`` and
``rolled_back``; the backend sets ``assigned`` and ``cancelled`` and calls :func:`notify`.

Reports
=======

A report names the ``attempt`` it belongs to (the vehicle echoes the attempt of its
assignment) and a ``seq`` that grows with every report a vehicle sends (a per-vehicle counter
or a report timestamp in milliseconds: anything monotonic). Checked in this order:

1. a status the vehicle cannot report (``assigned``, ``notified``, ``cancelled``):
   **rejected** ``not_reportable``;
2. an older attempt: **ignored** ``old_attempt`` (it was retried since); a newer attempt than
   the record knows: **rejected** ``unknown_attempt``;
3. ``seq`` equal to the last applied one: **ignored** ``duplicate`` (redelivery); lower:
   **ignored** ``out_of_order`` (a newer report was applied already, and it supersedes);
4. the transition, for a report of the current attempt with a newer ``seq``:

   ==============  ============  ============  =========  =========  ============
   record \\ report downloading   installing    succeeded  failed     rolled_back
   ==============  ============  ============  =========  =========  ============
   assigned        downloading   installing    succeeded  failed     rolled_back
   notified        downloading   installing    succeeded  failed     rolled_back
   downloading     (progress)    installing    succeeded  failed     rolled_back
   installing      *invalid*     (progress)    succeeded  failed     rolled_back
   succeeded       *final*       *final*       duplicate  *final*    *final*
   failed          *final*       *final*       *final*    duplicate  rolled_back
   rolled_back     *final*       *final*       *final*    *final*    duplicate
   cancelled       after_cancel  after_cancel  succeeded  failed     rolled_back
   ==============  ============  ============  =========  =========  ============

   A state name means the report is applied and the record moves there (skipping states is
   fine: reports get lost or overtake each other, and a final report is the vehicle's word on
   what it runs). *(progress)*: applied, status unchanged, ``seq`` advances. *duplicate*: the
   vehicle re-sent its result under a new ``seq``; **ignored**. *after_cancel*: **ignored**,
   the vehicle learns of the cancellation at its next check-in. *invalid* (``installing`` back
   to ``downloading``) and *final* (``already_final``): **rejected**. A final report after a
   cancellation wins, because the vehicle finished before it saw the cancellation, and the
   record must say what the ECU really runs.

Consequences: the same report twice changes nothing; the reports of any valid run, delivered
in any order and any number of times, leave the record exactly as in-order delivery does (the
report with the highest ``seq`` decides status and error code, every transition from an earlier
state of a valid run to a later one is allowed, and older reports are ignored). So a
``rolled_back`` report should repeat the error code of the failure that caused it.

Backend actions
===============

* :func:`notify`: ``assigned`` → ``notified``; no effect later (a vehicle checks in often).
* :func:`cancel`: any state that is not final → ``cancelled``; ``cancelled`` again is a
  duplicate; a final state is ``already_final``.
* :func:`retry`: ``failed``, ``rolled_back`` or ``cancelled`` → a new attempt (``attempt + 1``,
  ``assigned``, no ``seq``, no error code); anything else is ``not_retryable``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class InstallStatus(StrEnum):
    ASSIGNED = "assigned"
    NOTIFIED = "notified"
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset(
    {
        InstallStatus.SUCCEEDED,
        InstallStatus.FAILED,
        InstallStatus.ROLLED_BACK,
        InstallStatus.CANCELLED,
    }
)
"""States a record stays in unless a retry starts a new attempt (see the module docstring for
the reports that may still move ``failed`` and ``cancelled``)."""

VEHICLE_STATES = frozenset(
    {
        InstallStatus.DOWNLOADING,
        InstallStatus.INSTALLING,
        InstallStatus.SUCCEEDED,
        InstallStatus.FAILED,
        InstallStatus.ROLLED_BACK,
    }
)
"""States a vehicle may report."""

RETRYABLE_STATES = frozenset(
    {InstallStatus.FAILED, InstallStatus.ROLLED_BACK, InstallStatus.CANCELLED}
)

# Reported states that are the vehicle's final word on an attempt.
_VEHICLE_RESULTS = frozenset(
    {InstallStatus.SUCCEEDED, InstallStatus.FAILED, InstallStatus.ROLLED_BACK}
)
_PROGRESS_RANK = {
    InstallStatus.ASSIGNED: 0,
    InstallStatus.NOTIFIED: 1,
    InstallStatus.DOWNLOADING: 2,
    InstallStatus.INSTALLING: 3,
}


@dataclass(frozen=True, slots=True)
class RecordState:
    """What a service stores per (campaign, vehicle, ECU)."""

    status: InstallStatus = InstallStatus.ASSIGNED
    attempt: int = 1
    """Starts at 1; each retry adds one."""
    last_seq: int | None = None
    """``seq`` of the last report applied in this attempt."""
    error_code: str | None = None
    """Error code of the last applied report (set by ``failed`` and ``rolled_back``)."""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES


@dataclass(frozen=True, slots=True)
class Report:
    """One status report from a vehicle about one ECU's install."""

    attempt: int
    seq: int
    status: InstallStatus
    error_code: str | None = None


class OutcomeReason(StrEnum):
    # Ignored: expected in a distributed system; nothing to do.
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    OLD_ATTEMPT = "old_attempt"
    AFTER_CANCEL = "after_cancel"
    ALREADY_PAST = "already_past"
    # Rejected: the report or the request is wrong; worth a log line or a dead letter.
    NOT_REPORTABLE = "not_reportable"
    UNKNOWN_ATTEMPT = "unknown_attempt"
    INVALID_TRANSITION = "invalid_transition"
    ALREADY_FINAL = "already_final"
    NOT_RETRYABLE = "not_retryable"


REJECTIONS = frozenset(
    {
        OutcomeReason.NOT_REPORTABLE,
        OutcomeReason.UNKNOWN_ATTEMPT,
        OutcomeReason.INVALID_TRANSITION,
        OutcomeReason.ALREADY_FINAL,
        OutcomeReason.NOT_RETRYABLE,
    }
)


@dataclass(frozen=True, slots=True)
class Outcome:
    record: RecordState
    """The record after the event (the same object when nothing changed)."""
    changed: bool
    reason: OutcomeReason | None = None
    """Why nothing changed; None when the event was applied."""

    @property
    def rejected(self) -> bool:
        """The event was wrong, not merely late or repeated."""
        return self.reason in REJECTIONS


def _unchanged(record: RecordState, reason: OutcomeReason) -> Outcome:
    return Outcome(record, changed=False, reason=reason)


def _applied(record: RecordState, new: RecordState) -> Outcome:
    return Outcome(new, changed=new != record)


def _transition_refusal(current: InstallStatus, reported: InstallStatus) -> OutcomeReason | None:
    """Why a newer report of the current attempt cannot move ``current`` to ``reported``."""
    if current is InstallStatus.CANCELLED:
        return None if reported in _VEHICLE_RESULTS else OutcomeReason.AFTER_CANCEL
    if current in FINAL_STATES:
        if reported is current:
            return OutcomeReason.DUPLICATE
        if current is InstallStatus.FAILED and reported is InstallStatus.ROLLED_BACK:
            return None
        return OutcomeReason.ALREADY_FINAL
    if reported in _VEHICLE_RESULTS or _PROGRESS_RANK[reported] >= _PROGRESS_RANK[current]:
        return None
    return OutcomeReason.INVALID_TRANSITION


def apply_report(record: RecordState, report: Report) -> Outcome:
    """Apply a vehicle's report to its record; see the module docstring for the rules."""
    if report.status not in VEHICLE_STATES:
        return _unchanged(record, OutcomeReason.NOT_REPORTABLE)
    if report.attempt < record.attempt:
        return _unchanged(record, OutcomeReason.OLD_ATTEMPT)
    if report.attempt > record.attempt:
        return _unchanged(record, OutcomeReason.UNKNOWN_ATTEMPT)
    if record.last_seq is not None:
        if report.seq == record.last_seq:
            return _unchanged(record, OutcomeReason.DUPLICATE)
        if report.seq < record.last_seq:
            return _unchanged(record, OutcomeReason.OUT_OF_ORDER)
    refusal = _transition_refusal(record.status, report.status)
    if refusal is not None:
        return _unchanged(record, refusal)
    error_code = report.error_code if report.status in _VEHICLE_RESULTS else None
    return _applied(
        record,
        replace(record, status=report.status, last_seq=report.seq, error_code=error_code),
    )


def notify(record: RecordState) -> Outcome:
    """The vehicle fetched Director metadata that lists this install."""
    if record.status is InstallStatus.ASSIGNED:
        return _applied(record, replace(record, status=InstallStatus.NOTIFIED))
    if record.status is InstallStatus.NOTIFIED:
        return _unchanged(record, OutcomeReason.DUPLICATE)
    return _unchanged(record, OutcomeReason.ALREADY_PAST)


def cancel(record: RecordState) -> Outcome:
    """An operator cancelled this install (or the whole campaign)."""
    if record.status is InstallStatus.CANCELLED:
        return _unchanged(record, OutcomeReason.DUPLICATE)
    if record.is_final:
        return _unchanged(record, OutcomeReason.ALREADY_FINAL)
    return _applied(record, replace(record, status=InstallStatus.CANCELLED))


def retry(record: RecordState) -> Outcome:
    """Start a new attempt after a failure, rollback or cancellation."""
    if record.status not in RETRYABLE_STATES:
        return _unchanged(record, OutcomeReason.NOT_RETRYABLE)
    return _applied(record, RecordState(attempt=record.attempt + 1))


__all__ = [
    "FINAL_STATES",
    "REJECTIONS",
    "RETRYABLE_STATES",
    "VEHICLE_STATES",
    "InstallStatus",
    "Outcome",
    "OutcomeReason",
    "RecordState",
    "Report",
    "apply_report",
    "cancel",
    "notify",
    "retry",
]
