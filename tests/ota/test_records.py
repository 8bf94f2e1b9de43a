"""Install records: every state against every report, replays and out-of-order delivery."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.records import (
    VEHICLE_STATES,
    InstallStatus,
    Outcome,
    OutcomeReason,
    RecordState,
    Report,
    apply_report,
    cancel,
    notify,
    retry,
)

S = InstallStatus
ALL = list(InstallStatus)

# Expected result of a report of the current attempt, with a newer seq, per (record, report),
# written out by hand from the rules (not derived from the module). A state token means
# "applied, the record moves there"; the others are why nothing changed.
TABLE_TEXT = """
record \\ report  assigned  notified  downloading  installing  succeeded  failed  rolled_back  cancelled
assigned          NR        NR        D            I           OK         F       RB           NR
notified          NR        NR        D            I           OK         F       RB           NR
downloading       NR        NR        D            I           OK         F       RB           NR
installing        NR        NR        INV          I           OK         F       RB           NR
succeeded         NR        NR        FIN          FIN         DUP        FIN     FIN          NR
failed            NR        NR        FIN          FIN         FIN        DUP     RB           NR
rolled_back       NR        NR        FIN          FIN         FIN        FIN     DUP          NR
cancelled         NR        NR        AC           AC          OK         F       RB           NR
"""  # noqa: E501
TOKENS: dict[str, InstallStatus | str] = {
    "D": S.DOWNLOADING,
    "I": S.INSTALLING,
    "OK": S.SUCCEEDED,
    "F": S.FAILED,
    "RB": S.ROLLED_BACK,
    "NR": "not_reportable",
    "INV": "invalid_transition",
    "FIN": "already_final",
    "DUP": "duplicate",
    "AC": "after_cancel",
}


def parse_table(text: str) -> dict[tuple[InstallStatus, InstallStatus], InstallStatus | str]:
    header, *rows = text.strip().splitlines()
    columns = [S(name) for name in header.split()[3:]]
    table = {}
    for row in rows:
        current, *cells = row.split()
        for reported, cell in zip(columns, cells, strict=True):
            table[S(current), reported] = TOKENS[cell]
    assert len(table) == len(ALL) ** 2
    return table


TABLE = parse_table(TABLE_TEXT)
REJECTED = {"not_reportable", "invalid_transition", "already_final"}


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("reported", ALL)
def test_every_state_against_every_report(current: InstallStatus, reported: InstallStatus) -> None:
    record = RecordState(status=current, attempt=2, last_seq=10, error_code="OLD")
    outcome = apply_report(record, Report(attempt=2, seq=11, status=reported, error_code="E7"))
    expected = TABLE[current, reported]
    if isinstance(expected, InstallStatus):
        assert outcome.reason is None and not outcome.rejected
        assert outcome.changed
        assert outcome.record.status == expected
        assert outcome.record.last_seq == 11
        assert outcome.record.attempt == 2
        final_report = reported in (S.SUCCEEDED, S.FAILED, S.ROLLED_BACK)
        assert outcome.record.error_code == ("E7" if final_report else None)
    else:
        assert outcome == Outcome(record, changed=False, reason=OutcomeReason(expected))
        assert outcome.rejected == (expected in REJECTED)


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("reported", sorted(VEHICLE_STATES))
def test_reports_of_an_old_attempt_are_ignored(
    current: InstallStatus, reported: InstallStatus
) -> None:
    record = RecordState(status=current, attempt=3, last_seq=4)
    outcome = apply_report(record, Report(attempt=2, seq=99, status=reported))
    assert (outcome.changed, outcome.reason, outcome.rejected) == (False, "old_attempt", False)


@pytest.mark.parametrize("current", ALL)
def test_reports_of_an_attempt_not_yet_started_are_rejected(current: InstallStatus) -> None:
    outcome = apply_report(
        RecordState(status=current), Report(attempt=2, seq=1, status=S.SUCCEEDED)
    )
    assert (outcome.changed, outcome.reason, outcome.rejected) == (False, "unknown_attempt", True)


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("reported", sorted(VEHICLE_STATES))
def test_redelivered_and_overtaken_reports_are_ignored(
    current: InstallStatus, reported: InstallStatus
) -> None:
    record = RecordState(status=current, last_seq=7)
    same = apply_report(record, Report(attempt=1, seq=7, status=reported))
    older = apply_report(record, Report(attempt=1, seq=3, status=reported))
    assert (same.changed, same.reason) == (False, "duplicate")
    assert (older.changed, older.reason) == (False, "out_of_order")
    assert not same.rejected and not older.rejected


def test_the_same_report_twice_changes_nothing_the_second_time() -> None:
    report = Report(attempt=1, seq=5, status=S.FAILED, error_code="E_FLASH")
    first = apply_report(RecordState(), report)
    second = apply_report(first.record, report)
    assert first.changed and first.record == RecordState(S.FAILED, 1, 5, "E_FLASH")
    assert not second.changed and second.record is first.record


def test_a_final_report_before_any_progress_report_is_taken() -> None:
    record = apply_report(RecordState(), Report(1, 9, S.SUCCEEDED)).record
    assert record.status == S.SUCCEEDED
    # The progress reports arrive late, and change nothing.
    for seq, status in ((3, S.DOWNLOADING), (6, S.INSTALLING)):
        assert apply_report(record, Report(1, seq, status)).reason == "out_of_order"


def test_progress_reports_advance_the_sequence() -> None:
    record = apply_report(RecordState(), Report(1, 1, S.DOWNLOADING)).record
    outcome = apply_report(record, Report(1, 2, S.DOWNLOADING))
    assert outcome.changed and outcome.record == RecordState(S.DOWNLOADING, 1, 2)


def test_a_vehicle_that_finished_before_the_cancellation_keeps_its_result() -> None:
    installing = RecordState(S.INSTALLING, last_seq=4)
    cancelled = cancel(installing).record
    assert cancelled == RecordState(S.CANCELLED, last_seq=4)
    assert apply_report(cancelled, Report(1, 5, S.INSTALLING)).reason == "after_cancel"
    assert apply_report(cancelled, Report(1, 6, S.SUCCEEDED)).record.status == S.SUCCEEDED


# --- backend actions ---------------------------------------------------------------------------

A, N, C = S.ASSIGNED, S.NOTIFIED, S.CANCELLED
PAST, FINAL, NO_RETRY = "already_past", "already_final", "not_retryable"
# Per record state, in the order of InstallStatus: assigned, notified, downloading,
# installing, succeeded, failed, rolled_back, cancelled.
NOTIFY = dict(zip(ALL, [N, "duplicate", PAST, PAST, PAST, PAST, PAST, PAST], strict=True))
CANCEL = dict(zip(ALL, [C, C, C, C, FINAL, FINAL, FINAL, "duplicate"], strict=True))
RETRY = dict(zip(ALL, [NO_RETRY] * 5 + [A, A, A], strict=True))


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize(
    ("action", "table"), [(notify, NOTIFY), (cancel, CANCEL), (retry, RETRY)], ids=str
)
def test_every_state_against_every_backend_action(
    current: InstallStatus, action: object, table: dict[InstallStatus, InstallStatus | str]
) -> None:
    record = RecordState(status=current, attempt=2, last_seq=8, error_code="E1")
    outcome = action(record)  # type: ignore[operator]
    expected = table[current]
    if isinstance(expected, InstallStatus):
        assert outcome.changed and outcome.reason is None
        assert outcome.record.status == expected
    else:
        assert outcome == Outcome(record, changed=False, reason=OutcomeReason(expected))


def test_retry_starts_a_clean_new_attempt_that_ignores_the_old_one() -> None:
    failed = RecordState(S.FAILED, attempt=1, last_seq=12, error_code="E_FLASH")
    fresh = retry(failed).record
    assert fresh == RecordState(S.ASSIGNED, attempt=2, last_seq=None, error_code=None)
    assert apply_report(fresh, Report(1, 13, S.FAILED)).reason == "old_attempt"
    # Sequence numbers of the new attempt need not exceed the old attempt's.
    assert apply_report(fresh, Report(2, 1, S.DOWNLOADING)).record.status == S.DOWNLOADING


# --- delivery in any order ---------------------------------------------------------------------


@st.composite
def valid_runs(draw: st.DrawFn) -> list[Report]:
    """The reports of one correct install attempt, in the order the vehicle sent them."""
    statuses = [S.DOWNLOADING] * draw(st.integers(0, 3)) + [S.INSTALLING] * draw(st.integers(0, 2))
    ending = draw(
        st.sampled_from(
            [(), (S.SUCCEEDED,), (S.FAILED,), (S.ROLLED_BACK,), (S.FAILED, S.ROLLED_BACK)]
        )
    )
    statuses += ending
    seqs = sorted(
        draw(st.sets(st.integers(1, 10_000), min_size=len(statuses), max_size=len(statuses)))
    )
    codes = st.none() | st.sampled_from(["E_FLASH", "E_VERIFY"])
    return [
        Report(1, seq, status, draw(codes) if status in (S.FAILED, S.ROLLED_BACK) else None)
        for seq, status in zip(seqs, statuses, strict=True)
    ]


def deliver(record: RecordState, reports: list[Report]) -> tuple[RecordState, list[Outcome]]:
    outcomes = []
    for report in reports:
        outcome = apply_report(record, report)
        outcomes.append(outcome)
        record = outcome.record
    return record, outcomes


@given(run=valid_runs(), data=st.data(), start=st.sampled_from([S.ASSIGNED, S.NOTIFIED]))
def test_any_order_with_duplicates_ends_like_in_order_delivery(
    run: list[Report], data: st.DataObject, start: InstallStatus
) -> None:
    initial = RecordState(status=start)
    in_order, in_order_outcomes = deliver(initial, run)
    assert not any(o.rejected for o in in_order_outcomes)
    if run:
        last = run[-1]
        assert in_order == RecordState(last.status, 1, last.seq, last.error_code)

    duplicates = data.draw(st.lists(st.sampled_from(run), max_size=6)) if run else []
    shuffled = data.draw(st.permutations(run + duplicates))
    final, outcomes = deliver(initial, shuffled)
    assert final == in_order
    assert not any(o.rejected for o in outcomes)
