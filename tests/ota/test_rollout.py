"""Campaign rollout arithmetic: wave plans, late joiners, gates, failure groups, dry run."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ota.rollout import (
    HASH_SPACE,
    Dependency,
    EcuFacts,
    Eligibility,
    EligibilityReason,
    FailureReport,
    GateAction,
    GateCode,
    GatePolicy,
    ImageFacts,
    InvalidVersion,
    SoftwareCondition,
    TargetFilter,
    VehicleFacts,
    WaveSize,
    WaveSpec,
    WaveSpecError,
    WaveStats,
    assign_late_joiner,
    compare_versions,
    eligibility,
    estimate_duration,
    evaluate_wave,
    group_failures,
    hash_wave,
    parse_version,
    plan_waves,
    vin_hash,
    wilson_lower,
    wilson_upper,
)

STANDARD = WaveSpec.parse(["5", "25%", "50%", "100%"])


def fleet(n: int, prefix: str = "WVWZZZ1KZNT") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


# --- wave specs --------------------------------------------------------------------------------


def test_wave_spec_parses_counts_and_percentages() -> None:
    assert STANDARD.waves == (
        WaveSize(count=5),
        WaveSize(percent=Fraction(25)),
        WaveSize(percent=Fraction(50)),
        WaveSize(percent=Fraction(100)),
    )
    assert WaveSpec.parse([5, "12.5%", "100%"]).waves[1].percent == Fraction(25, 2)
    assert WaveSize(percent=12.5) == WaveSize(percent=Fraction(25, 2))


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([], "at least one wave"),
        (["5", "50%"], "last wave must be 100%"),
        (["5", "100"], "last wave must be 100%"),
        (["50%", "25%", "100%"], "cumulative"),
        (["10", "10", "100%"], "cumulative"),
        (["0", "100%"], "wave 0: a wave count must be at least 1"),
        (["5", "0%", "100%"], "wave 1: a wave percentage must be in (0, 100]"),
        (["5", "150%"], "wave 1: a wave percentage must be in (0, 100]"),
        (["5", "ten%", "100%"], "wave 1: a wave size is a count or 'N%'"),
        (["-3", "100%"], "wave 0"),
        ([True, "100%"], "wave 0"),
    ],
)
def test_wave_spec_rejects_bad_plans(sizes: list[str], message: str) -> None:
    with pytest.raises(WaveSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        WaveSpec.parse(sizes)


@pytest.mark.parametrize(
    ("sizes", "fleet_size", "targets"),
    [
        (["5", "25%", "50%", "100%"], 200, [5, 50, 100, 200]),
        (["5", "25%", "50%", "100%"], 3, [3, 3, 3, 3]),  # a canary larger than the fleet
        (["5", "25%", "50%", "100%"], 12, [5, 5, 6, 12]),  # 25% of 12 is below the canary
        (["5", "25%", "50%", "100%"], 0, [0, 0, 0, 0]),
        (["1%", "100%"], 150, [2, 150]),  # rounded up: a non-zero share is never empty
        (["33.3%", "100%"], 1000, [333, 1000]),  # exact decimal, not 332.99999
        (["10%", "50", "100%"], 1000, [100, 100, 1000]),  # mixed: targets never go down
    ],
)
def test_cumulative_targets(sizes: list[str], fleet_size: int, targets: list[int]) -> None:
    spec = WaveSpec.parse(sizes)
    assert spec.cumulative_targets(fleet_size) == targets
    assert sum(spec.wave_sizes(fleet_size)) == fleet_size


# --- wave plans --------------------------------------------------------------------------------

vins_strategy = st.lists(st.text("ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=17, max_size=17))
spec_strategy = st.sampled_from(
    [
        STANDARD,
        WaveSpec.parse(["1", "100%"]),
        WaveSpec.parse(["10%", "100%"]),
        WaveSpec.parse(["2", "5", "20%", "60%", "100%"]),
        WaveSpec.parse(["100%"]),
    ]
)


@settings(max_examples=150)
@given(vins=vins_strategy, salt=st.text(max_size=8), spec=spec_strategy)
def test_plan_has_exact_sizes_and_follows_hash_order(
    vins: list[str], salt: str, spec: WaveSpec
) -> None:
    plan = plan_waves(vins, salt, spec)
    assert set(plan) == set(vins)
    sizes = spec.wave_sizes(len(set(vins)))
    assert [sum(1 for w in plan.values() if w == k) for k in range(len(spec))] == sizes
    by_hash = sorted(plan, key=lambda vin: vin_hash(vin, salt))
    waves_in_hash_order = [plan[vin] for vin in by_hash]
    assert waves_in_hash_order == sorted(waves_in_hash_order)


@given(vins=vins_strategy, salt=st.text(max_size=8), seed=st.integers(0, 2**32))
def test_plan_depends_only_on_the_set_of_vins(vins: list[str], salt: str, seed: int) -> None:
    shuffled = vins + vins[: len(vins) // 2]  # duplicates too
    random.Random(seed).shuffle(shuffled)
    assert plan_waves(shuffled, salt, STANDARD) == plan_waves(vins, salt, STANDARD)


def test_canary_is_the_lowest_hashes_not_the_oldest_vehicles() -> None:
    vins = fleet(1000)  # serial order = registration order
    plan = plan_waves(vins, "campaign-42", STANDARD)
    canary = sorted(vin for vin, wave in plan.items() if wave == 0)
    assert canary == sorted(sorted(vins, key=lambda v: vin_hash(v, "campaign-42"))[:5])
    assert canary != vins[:5]
    assert max(vins.index(vin) for vin in canary) > 100  # spread over the fleet


def test_each_campaign_salt_picks_a_different_canary() -> None:
    vins = fleet(1000)
    spec = WaveSpec.parse(["10%", "100%"])
    canaries = [
        {vin for vin, wave in plan_waves(vins, salt, spec).items() if wave == 0}
        for salt in ("campaign-1", "campaign-2")
    ]
    # Independent 10% samples share about 10 vehicles; the same canary would share 100.
    assert len(canaries[0] & canaries[1]) < 30


# --- late joiners ------------------------------------------------------------------------------


@given(
    vin=st.text("ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=17, max_size=17),
    fleet_size=st.integers(1, 5000),
    current_wave=st.integers(0, 3),
)
def test_late_joiner_never_lands_in_a_wave_behind_the_campaign(
    vin: str, fleet_size: int, current_wave: int
) -> None:
    wave = assign_late_joiner(vin, "s", STANDARD, fleet_size, current_wave)
    assert current_wave <= wave < len(STANDARD)
    assert wave == max(current_wave, hash_wave(vin, "s", STANDARD, fleet_size))


def test_late_joiner_goes_to_the_running_wave_when_its_hash_wave_is_behind() -> None:
    vins = fleet(400, prefix="LATEJOINER0")
    early = [v for v in vins if hash_wave(v, "s", STANDARD, 1000) == 0]
    late = [v for v in vins if hash_wave(v, "s", STANDARD, 1000) == 3]
    assert early and late
    assert {assign_late_joiner(v, "s", STANDARD, 1000, current_wave=2) for v in early} == {2}
    assert {assign_late_joiner(v, "s", STANDARD, 1000, current_wave=2) for v in late} == {3}
    assert {assign_late_joiner(v, "s", STANDARD, 1000, current_wave=0) for v in early} == {0}


@pytest.mark.parametrize("current_wave", [-1, 4])
def test_late_joiner_needs_a_real_current_wave(current_wave: int) -> None:
    with pytest.raises(ValueError, match="current_wave"):
        assign_late_joiner("WVWZZZ1KZNT000001", "s", STANDARD, 100, current_wave)


def test_late_joiner_lands_where_a_replan_of_the_grown_fleet_would_put_it() -> None:
    launched = fleet(1000)
    joiners = fleet(200, prefix="JOINERSVIN0")
    agree = sum(
        plan_waves([*launched, vin], "s", STANDARD)[vin]
        == assign_late_joiner(vin, "s", STANDARD, 1001, current_wave=0)
        for vin in joiners
    )
    # Only vehicles whose hash lies near a wave boundary can differ.
    assert agree >= 0.9 * len(joiners)


@given(vin=st.text(min_size=1, max_size=20), hundreds=st.integers(1, 50))
def test_hash_wave_of_a_percentage_plan_does_not_depend_on_the_fleet_size(
    vin: str, hundreds: int
) -> None:
    spec = WaveSpec.parse(["10%", "35%", "100%"])
    fraction = Fraction(vin_hash(vin, "s"), HASH_SPACE)
    expected = next(k for k, p in enumerate([10, 35, 100]) if fraction < Fraction(p, 100))
    assert hash_wave(vin, "s", spec, 100 * hundreds) == expected


# --- duration ----------------------------------------------------------------------------------


def test_estimate_duration_runs_waves_in_sequence_with_a_soak_between() -> None:
    # 200 vehicles: waves of 5, 45, 50, 100, each 1 h to install, 2 h soak between waves.
    assert estimate_duration(STANDARD, 200, 3600, 7200) == timedelta(hours=4 + 3 * 2)
    # At most 20 installing at once: 1 + 3 + 3 + 5 batches.
    assert estimate_duration(STANDARD, 200, 3600, 0, max_concurrent=20) == timedelta(hours=12)
    # Three vehicles all fit in the canary; the empty waves cost nothing.
    assert estimate_duration(STANDARD, 3, 600, 7200) == timedelta(minutes=10)
    assert estimate_duration(STANDARD, 0, 600, 7200) == timedelta(0)


# --- Wilson bounds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "n", "lower", "upper"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (0, 5, 0.0, 0.4345), (10, 10, 0.7225, 1.0)],
)
def test_wilson_matches_published_values(failures: int, n: int, lower: float, upper: float) -> None:
    assert wilson_lower(failures, n) == pytest.approx(lower, abs=1e-4)
    assert wilson_upper(failures, n) == pytest.approx(upper, abs=1e-4)


def test_wilson_without_reports_knows_nothing() -> None:
    assert (wilson_lower(0, 0), wilson_upper(0, 0)) == (0.0, 1.0)


@given(data=st.data(), n=st.integers(1, 10_000), z=st.floats(0.5, 4.0))
def test_wilson_bounds_enclose_the_observed_rate(data: st.DataObject, n: int, z: float) -> None:
    failures = data.draw(st.integers(0, n))
    lower, upper = wilson_lower(failures, n, z), wilson_upper(failures, n, z)
    assert 0.0 <= lower <= failures / n <= upper <= 1.0
    assert upper == pytest.approx(1 - wilson_lower(n - failures, n, z), abs=1e-12)
    if failures < n:
        assert wilson_lower(failures + 1, n, z) > lower


@pytest.mark.parametrize(("failures", "n", "z"), [(-1, 5, 1.96), (6, 5, 1.96), (1, 5, 0.0)])
def test_wilson_rejects_impossible_counts(failures: int, n: int, z: float) -> None:
    with pytest.raises(ValueError):
        wilson_upper(failures, n, z)


# --- gates -------------------------------------------------------------------------------------


def stats(total: int, succeeded: int, failed: int) -> WaveStats:
    """A wave where everyone without a result is still installing."""
    return WaveStats(total, succeeded, failed, total - succeeded - failed, 0)


# The example table of the module docstring, row by row.
@pytest.mark.parametrize(
    ("total", "succeeded", "failed", "action", "code"),
    [
        (5, 5, 0, "complete", "success_threshold_reached"),
        (5, 3, 0, "wait", "waiting_for_reports"),
        (5, 0, 1, "pause", "success_threshold_unreachable"),
        (5, 3, 2, "pause", "failure_rate_above_limit"),
        (10, 4, 1, "pause", "success_threshold_unreachable"),
        (10, 8, 2, "pause", "failure_rate_above_limit"),
        (100, 5, 3, "pause", "failure_rate_above_limit"),
        (100, 30, 1, "wait", "waiting_for_success_threshold"),
        (100, 94, 1, "wait", "waiting_for_success_threshold"),
        (100, 95, 1, "advance", "success_threshold_reached"),
        (1000, 180, 20, "pause", "failure_rate_above_limit"),
    ],
)
def test_gate_examples_of_the_docstring(
    total: int, succeeded: int, failed: int, action: str, code: str
) -> None:
    decision = evaluate_wave(stats(total, succeeded, failed), GatePolicy())
    assert (decision.action, decision.reason["code"]) == (action, code)


def outcomes_in_every_order(size: int, failures: int) -> list[list[bool]]:
    """Arrival orders of ``failures`` failures among ``size`` results (True = failed), at most
    a few dozen per case, all of them when there are few."""
    base = [True] * failures + [False] * (size - failures)
    rng = random.Random(size * 100 + failures)
    orders = {tuple(base), tuple(reversed(base))}
    for _ in range(60):
        rng.shuffle(base)
        orders.add(tuple(base))
    return [list(order) for order in orders]


def run_wave(size: int, results: list[bool], policy: GatePolicy) -> list[GateAction]:
    """The gate's decision after each report of a wave whose vehicles all started."""
    decisions = []
    for reported in range(len(results) + 1):
        failed = sum(results[:reported])
        decisions.append(evaluate_wave(stats(size, reported - failed, failed), policy).action)
    return decisions


@pytest.mark.parametrize("size", range(5, 11))
def test_a_healthy_canary_is_never_paused(size: int) -> None:
    decisions = run_wave(size, [False] * size, GatePolicy())
    assert GateAction.PAUSE not in decisions
    assert decisions[-1] == GateAction.COMPLETE


@pytest.mark.parametrize("size", range(5, 11))
@pytest.mark.parametrize("failures", [2, 3])
def test_a_canary_with_two_or_three_failures_pauses_and_never_advances(
    size: int, failures: int
) -> None:
    for order in outcomes_in_every_order(size, failures):
        decisions = run_wave(size, order, GatePolicy())
        assert GateAction.ADVANCE not in decisions and GateAction.COMPLETE not in decisions
        last_failure = max(i for i, failed in enumerate(order) if failed) + 1
        assert decisions[last_failure] == GateAction.PAUSE, order


@pytest.mark.parametrize("size", range(5, 11))
@pytest.mark.parametrize("failures", [2, 3])
def test_the_failure_rate_test_alone_pauses_small_canaries(size: int, failures: int) -> None:
    # With a lenient threshold the canary could still pass on successes; the statistics must
    # stop it once every vehicle reported.
    policy = GatePolicy(success_threshold=0.5)
    results = [True] * failures + [False] * (size - failures)
    decision = evaluate_wave(stats(size, size - failures, failures), policy)
    assert decision.action == GateAction.PAUSE
    assert decision.reason["code"] == GateCode.FAILURE_RATE_ABOVE_LIMIT
    assert run_wave(size, results, policy)[-1] == GateAction.PAUSE


def simulate_campaign(
    fleet_size: int, spec: WaveSpec, failure_rate_by_wave: list[float], seed: int
) -> tuple[int, int, int, GateAction]:
    """Run waves one after another, one report at a time; return (wave, reported in it,
    its size, final action) at the first pause, or at the end."""
    rng = random.Random(seed)
    sizes = spec.wave_sizes(fleet_size)
    for wave, size in enumerate(sizes):
        succeeded = failed = 0
        for _ in range(size):
            if rng.random() < failure_rate_by_wave[wave]:
                failed += 1
            else:
                succeeded += 1
            decision = evaluate_wave(stats(size, succeeded, failed))
            if decision.action == GateAction.PAUSE:
                return wave, succeeded + failed, size, decision.action
        assert decision.action == GateAction.COMPLETE, (wave, decision)
    return len(sizes) - 1, sizes[-1], sizes[-1], GateAction.COMPLETE


@pytest.mark.parametrize("seed", range(20))
def test_campaign_pauses_within_the_wave_where_failures_start(seed: int) -> None:
    spec = WaveSpec.parse(["10", "10%", "40%", "100%"])
    # Waves of 10, 90, 300 and 600 vehicles; from wave 2 on one vehicle in five fails.
    wave, reported, size, action = simulate_campaign(1000, spec, [0, 0, 0.2, 0.2], seed)
    assert (wave, action) == (2, GateAction.PAUSE)
    assert reported < size / 3  # early in the wave, not at its end


@pytest.mark.parametrize("seed", range(5))
def test_a_clean_campaign_runs_to_completion(seed: int) -> None:
    spec = WaveSpec.parse(["10", "10%", "40%", "100%"])
    assert simulate_campaign(1000, spec, [0, 0, 0, 0], seed)[3] == GateAction.COMPLETE


def wave_stats(
    succeeded: st.SearchStrategy[int] = st.integers(0, 300),
    failed: st.SearchStrategy[int] = st.integers(0, 300),
    in_progress: st.SearchStrategy[int] = st.integers(0, 300),
) -> st.SearchStrategy[WaveStats]:
    return st.builds(
        lambda s, f, i, n: WaveStats(s + f + i + n, s, f, i, n),
        succeeded,
        failed,
        in_progress,
        st.integers(0, 300),
    )


@given(wave=wave_stats(failed=st.just(0)))
def test_a_wave_without_failures_never_pauses(wave: WaveStats) -> None:
    assert evaluate_wave(wave).action != GateAction.PAUSE


@given(wave=wave_stats(in_progress=st.integers(1, 300)))
def test_another_failure_never_lifts_a_pause(wave: WaveStats) -> None:
    assume(evaluate_wave(wave).action == GateAction.PAUSE)
    worse = WaveStats(
        wave.total, wave.succeeded, wave.failed + 1, wave.in_progress - 1, wave.not_started
    )
    assert evaluate_wave(worse).action == GateAction.PAUSE


@given(
    wave=wave_stats(
        succeeded=st.integers(5, 300), failed=st.integers(0, 20), in_progress=st.integers(1, 300)
    )
)
def test_another_success_never_causes_a_pause(wave: WaveStats) -> None:
    # Once min_reports is reached; below it, any report may be the one that allows a verdict.
    assume(evaluate_wave(wave).action != GateAction.PAUSE)
    better = WaveStats(
        wave.total, wave.succeeded + 1, wave.failed, wave.in_progress - 1, wave.not_started
    )
    assert evaluate_wave(better).action != GateAction.PAUSE


def test_threshold_compares_counts_exactly() -> None:
    # 19 of 20 is exactly 95%: float rounding must not make it fall short.
    assert evaluate_wave(stats(20, 19, 0)).action == GateAction.ADVANCE
    assert evaluate_wave(stats(20, 18, 0)).action == GateAction.WAIT


def test_gate_reasons_are_machine_readable() -> None:
    decision = evaluate_wave(stats(8, 5, 3), GatePolicy())
    assert decision.action == GateAction.PAUSE
    reason = decision.reason
    assert reason["code"] == "failure_rate_above_limit"
    assert (reason["failures"], reason["reported"], reason["limit"], reason["z"]) == (
        3,
        8,
        0.05,
        1.96,
    )
    assert reason["upper_bound"] == pytest.approx(wilson_upper(3, 8))
    assert reason["lower_bound"] == pytest.approx(wilson_lower(3, 8))
    assert json.loads(json.dumps(reason)) == reason

    waiting = evaluate_wave(stats(1000, 2, 0)).reason
    assert waiting == {
        "code": "waiting_for_reports",
        "reported": 2,
        "min_reports": 5,
        "failures": 0,
    }

    reached = evaluate_wave(WaveStats(100, 96, 0, 2, 2)).reason
    assert reached["code"] == "success_threshold_reached"
    assert (reached["success_rate"], reached["pending"]) == (0.96, 4)


def test_empty_wave_completes() -> None:
    decision = evaluate_wave(WaveStats(0, 0, 0, 0, 0))
    assert (decision.action, decision.reason["code"]) == ("complete", "empty_wave")


def test_not_started_vehicles_count_as_pending() -> None:
    # The wave cannot reach 95% yet, but it still can: wait, do not pause.
    assert evaluate_wave(WaveStats(100, 10, 0, 0, 90)).action == GateAction.WAIT
    assert evaluate_wave(WaveStats(100, 94, 0, 0, 6)).action == GateAction.WAIT


def test_inconsistent_wave_stats_are_refused() -> None:
    with pytest.raises(ValueError, match="inconsistent wave stats"):
        WaveStats(10, 5, 5, 1, 0)


@pytest.mark.parametrize(
    "kwargs",
    [{"success_threshold": 0}, {"max_failure_rate": 1}, {"min_reports": 0}, {"z": -1}],
)
def test_gate_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GatePolicy(**kwargs)  # type: ignore[arg-type]


# --- failure groups ----------------------------------------------------------------------------


def test_failures_group_by_error_code_and_hardware_variant() -> None:
    reports = [FailureReport(f"VIN{i:02d}", "E_FLASH", "BMS-HW03") for i in range(7)]
    reports += [FailureReport("VIN00", "E_FLASH", "BMS-HW03", ecu_id="BMS")]  # a second report
    reports += [FailureReport(f"VIN{i:02d}", "E_SIG", "TCU-HW01") for i in (20, 21)]
    reports += [FailureReport(f"VIN{i:02d}", "E_FLASH", "BMS-HW02") for i in (30, 31, 32)]
    groups = group_failures(reports)
    assert [(g.error_code, g.hardware_id, g.vehicles, g.reports) for g in groups] == [
        ("E_FLASH", "BMS-HW03", 7, 8),
        ("E_FLASH", "BMS-HW02", 3, 3),
        ("E_SIG", "TCU-HW01", 2, 2),
    ]
    assert groups[0].example_vins == ("VIN00", "VIN01", "VIN02", "VIN03", "VIN04")
    assert group_failures([]) == []


@given(
    st.lists(
        st.builds(
            FailureReport,
            st.sampled_from(["V1", "V2", "V3", "V4", "V5", "V6", "V7"]),
            st.sampled_from(["E1", "E2"]),
            st.sampled_from(["H1", "H2"]),
        )
    )
)
def test_failure_groups_account_for_every_report(reports: list[FailureReport]) -> None:
    groups = group_failures(reports)
    assert sum(g.reports for g in groups) == len(reports)
    assert [g.vehicles for g in groups] == sorted((g.vehicles for g in groups), reverse=True)
    assert all(len(g.example_vins) == min(5, g.vehicles) for g in groups)
    assert group_failures(list(reversed(reports))) == groups


# --- versions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9", "1.10"),
        ("4.2.0", "4.2.1"),
        ("9.0.7", "9.1.2"),
        ("2.0.0-rc.2", "2.0.0-rc.10"),
        ("2.0.0-rc10", "2.0.0"),
        ("2.0.0-1", "2.0.0-alpha"),  # numeric identifiers before letters, as in semver
        ("v1.2", "1.3"),
    ],
)
def test_versions_compare_numerically(older: str, newer: str) -> None:
    assert compare_versions(older, newer) == -1
    assert compare_versions(newer, older) == 1


@pytest.mark.parametrize(("a", "b"), [("1.2", "1.2.0"), ("v1.2.0", "1.2"), ("1.0+build7", "1")])
def test_equal_versions(a: str, b: str) -> None:
    assert compare_versions(a, b) == 0


@pytest.mark.parametrize("text", ["", "abc", "1..2", "1.2-", "SW-2024", "1.2.x"])
def test_unparsable_versions_are_refused(text: str) -> None:
    with pytest.raises(InvalidVersion, match="is not a version"):
        parse_version(text)


@given(
    st.lists(st.integers(0, 300), min_size=1, max_size=5),
    st.lists(st.integers(0, 300), min_size=1, max_size=5),
)
def test_dotted_numbers_compare_like_zero_padded_tuples(a: list[int], b: list[int]) -> None:
    width = max(len(a), len(b))
    pa, pb = a + [0] * (width - len(a)), b + [0] * (width - len(b))
    expected = (pa > pb) - (pa < pb)
    assert compare_versions(".".join(map(str, a)), ".".join(map(str, b))) == expected


# --- eligibility -------------------------------------------------------------------------------

VEHICLE = VehicleFacts("WVWZZZ1KZNT000001", "ID.4", 2022, "EU", tags=["fleet-a", "pilot"])
ECUS = [
    EcuFacts("BMS", "VW-ID-BMS-HW03", "9.0.7", release_counter=12),
    EcuFacts("TCU", "VW-ID-TCU-HW03", "3.1.0"),
    EcuFacts("GW", "VW-ID-GW-HW02", "1.4.2"),
]
BMS_IMAGE = ImageFacts(
    version="9.1.2",
    release_counter=14,
    hardware_ids=frozenset({"VW-ID-BMS-HW03", "VW-ID-BMS-HW04"}),
    dependencies=(Dependency("1.4.0", ecu_id="GW"),),
)
ANY = TargetFilter()


def test_a_matching_vehicle_is_eligible_for_its_fitting_ecus() -> None:
    result = eligibility(VEHICLE, ECUS, ANY, BMS_IMAGE)
    assert result == Eligibility(True, target_ecu_ids=("BMS",))
    assert not result.blocked


@pytest.mark.parametrize(
    ("target_filter", "reason"),
    [
        (TargetFilter(models=frozenset({"ID.3"})), "model_not_targeted"),
        (TargetFilter(model_year_min=2023), "model_year_not_targeted"),
        (TargetFilter(model_year_max=2021), "model_year_not_targeted"),
        (TargetFilter(regions=frozenset({"US", "CN"})), "region_not_targeted"),
        (TargetFilter(tags=frozenset({"pilot", "beta"})), "tags_missing"),
        (
            TargetFilter(software=(SoftwareCondition(ecu_id="TCU", min_version="3.2"),)),
            "software_not_targeted",
        ),
        (
            TargetFilter(
                software=(SoftwareCondition(hardware_id="XX-HW", versions=frozenset({"1.0"})),)
            ),
            "software_not_targeted",
        ),
    ],
)
def test_the_target_filter_leaves_vehicles_out(target_filter: TargetFilter, reason: str) -> None:
    result = eligibility(VEHICLE, ECUS, target_filter, BMS_IMAGE)
    assert (result.eligible, result.reason, result.blocked) == (False, reason, False)


def test_a_filter_matching_everything_given_targets_the_vehicle() -> None:
    target_filter = TargetFilter(
        models=frozenset({"ID.4", "ID.3"}),
        model_year_min=2022,
        model_year_max=2022,
        regions=frozenset({"EU"}),
        tags=frozenset({"pilot"}),
        software=(
            SoftwareCondition(ecu_id="BMS", min_version="9.0", max_version="9.0.7"),
            SoftwareCondition(hardware_id="VW-ID-TCU-HW03", versions=frozenset({"3.1"})),
        ),
    )
    assert eligibility(VEHICLE, ECUS, target_filter, BMS_IMAGE).eligible


def test_no_fitting_ecu_is_incompatible_hardware() -> None:
    image = ImageFacts("2.0.0", 3, frozenset({"VW-ID-BMS-HW05"}))
    result = eligibility(VEHICLE, ECUS, ANY, image)
    assert (result.reason, result.blocked) == (EligibilityReason.INCOMPATIBLE_HARDWARE, True)


@pytest.mark.parametrize(
    "bms",
    [
        EcuFacts("BMS", "VW-ID-BMS-HW03", "9.1.2"),  # same version
        EcuFacts("BMS", "VW-ID-BMS-HW03", "9.2.0"),  # newer version
        EcuFacts("BMS", "VW-ID-BMS-HW03", "garbled", release_counter=14),  # same counter
        EcuFacts("BMS", "VW-ID-BMS-HW03", "9.0.7", release_counter=15),  # newer counter
    ],
)
def test_already_on_that_release_or_newer_is_up_to_date(bms: EcuFacts) -> None:
    result = eligibility(VEHICLE, [bms, *ECUS[1:]], ANY, BMS_IMAGE)
    assert (result.reason, result.blocked) == (EligibilityReason.UP_TO_DATE, True)


def test_an_unparsable_installed_version_without_counter_gets_the_update() -> None:
    bms = EcuFacts("BMS", "VW-ID-BMS-HW03", "garbled")
    assert eligibility(VEHICLE, [bms, *ECUS[1:]], ANY, BMS_IMAGE).eligible


def test_only_outdated_ecus_of_a_fitting_hardware_are_targeted() -> None:
    twins = [
        EcuFacts("CAM_L", "CAM-HW1", "2.0.0"),
        EcuFacts("CAM_R", "CAM-HW1", "1.0.0"),
        EcuFacts("CAM_F", "CAM-HW2", "1.0.0"),
    ]
    image = ImageFacts("2.0.0", 5, frozenset({"CAM-HW1"}))
    assert eligibility(VEHICLE, twins, ANY, image).target_ecu_ids == ("CAM_R",)


@pytest.mark.parametrize(
    ("dependency", "met"),
    [
        (Dependency("1.4.0", ecu_id="GW"), True),
        (Dependency("1.5", ecu_id="GW"), False),
        (Dependency("1.0", ecu_id="ADAS"), False),  # the vehicle has no such ECU
        (Dependency("3.0", hardware_id="VW-ID-TCU-HW03"), True),
        (Dependency("3.1.1", hardware_id="VW-ID-TCU-HW03"), False),
    ],
)
def test_dependencies_on_other_ecus(dependency: Dependency, met: bool) -> None:
    image = ImageFacts("9.1.2", 14, frozenset({"VW-ID-BMS-HW03"}), (dependency,))
    result = eligibility(VEHICLE, ECUS, ANY, image)
    if met:
        assert result.eligible
    else:
        assert (result.reason, result.blocked) == (EligibilityReason.DEPENDENCY_UNMET, True)
        assert result.detail is not None and dependency.min_version in result.detail


def test_up_to_date_wins_over_an_unmet_dependency() -> None:
    image = ImageFacts("9.0.7", 12, frozenset({"VW-ID-BMS-HW03"}), (Dependency("9", ecu_id="GW"),))
    assert eligibility(VEHICLE, ECUS, ANY, image).reason == EligibilityReason.UP_TO_DATE


def test_conditions_and_dependencies_validate_themselves() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Dependency("1.0")
    with pytest.raises(ValueError, match="exactly one"):
        SoftwareCondition(ecu_id="BMS", hardware_id="X")
    with pytest.raises(InvalidVersion):
        Dependency("latest", ecu_id="GW")
    with pytest.raises(InvalidVersion):
        ImageFacts("new", 1, frozenset({"X"}))
