"""C-MAPSS RUL benchmark: file format, features, protocol, model quality and the CLI.

The data-dependent tests read ``../shared/data/cmapss/train_FD001.txt`` and skip when it is
absent. Model tests use a subset of engines and a fast configuration to stay within seconds;
the full benchmark is ``python -m diagnostics.cmapss evaluate`` (docs/cmapss.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from diagnostics.cmapss import cmapss_app
from diagnostics.cmapss_data import (
    CmapssFormatError,
    Trajectories,
    parse_trajectories,
    read_trajectories,
)
from diagnostics.cmapss_eval import evaluate
from diagnostics.cmapss_features import OperatingConditions, SensorNormaliser
from diagnostics.cmapss_model import RulConfig, train_model
from diagnostics.cmapss_protocol import (
    MIN_OBSERVED_CYCLES,
    TRUE_RUL_MAX,
    TRUE_RUL_MIN,
    phm08_score,
    row_rul,
    truncation_rows,
)

FD001 = Path(__file__).resolve().parents[3] / "shared" / "data" / "cmapss" / "train_FD001.txt"
FAST = RulConfig(learning_rate=0.1, max_rounds=300, early_stopping_rounds=30, inner_folds=3)
FAST_JSON = json.dumps({"learning_rate": 0.1, "max_rounds": 100, "inner_folds": 2})


@pytest.fixture(scope="module")
def fd001() -> Trajectories:
    if not FD001.exists():
        pytest.skip(f"C-MAPSS data not found at {FD001} (see ../shared/data/README.md)")
    return read_trajectories(FD001)


def _line(unit: int, cycle: int, value: float = 1.0) -> str:
    return " ".join([str(unit), str(cycle)] + [f"{value + i:.4f}" for i in range(24)]) + " "


def _write(path: Path, data: Trajectories) -> Path:
    table = np.column_stack([data.unit, data.cycle, data.settings, data.sensors])
    lines = [
        " ".join(f"{v:.4f}" if j > 1 else str(int(v)) for j, v in enumerate(row)) + " "
        for row in table
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- reading -------------------------------------------------------------------------------


def test_reads_fd001_with_its_trailing_spaces(fd001: Trajectories) -> None:
    assert fd001.n_rows == 20631
    assert fd001.units.tolist() == list(range(1, 101))
    assert fd001.unit_lengths.min() == 128 and fd001.unit_lengths.max() == 362
    assert fd001.sensors.shape == (20631, 21)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (_line(1, 1) + "\n" + " ".join(_line(1, 2).split()[:25]), 2, "found 25"),
        (_line(1, 1) + "\n" + _line(1, 2).replace("3.0000", "abc"), 2, "not a number: 'abc'"),
        (_line(1, 1) + "\n" + _line(1, 2).replace("3.0000", "nan"), 2, "not finite"),
        (_line(1, 1) + "\n" + _line(1, 3), 2, "cycle 3 where 2 was expected"),
        (_line(1, 2), 1, "cycle 2 where 1 was expected"),
        (_line(1, 1) + "\n" + _line(2, 1) + "\n" + _line(1, 2), 3, "unit 1 appears again"),
        (_line(1, 1) + "\n" + "1.5 2" + _line(1, 1)[3:], 2, "unit must be a positive integer"),
    ],
)
def test_malformed_rows_name_the_line_and_the_fault(text: str, line: int, fragment: str) -> None:
    with pytest.raises(CmapssFormatError) as caught:
        parse_trajectories(text, "bad.txt")
    assert caught.value.line == line
    assert f"bad.txt, line {line}:" in str(caught.value)
    assert fragment in str(caught.value)


def test_empty_and_missing_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(CmapssFormatError, match="empty file"):
        read_trajectories(tmp_path / "empty.txt")
    with pytest.raises(CmapssFormatError, match="file not found"):
        read_trajectories(tmp_path / "absent.txt")


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    padding=st.sampled_from(["", " ", "  ", "\t"]),
    broken=st.data(),
)
def test_parser_round_trips_and_pins_a_dropped_field(
    lengths: list[int], padding: str, broken: st.DataObject
) -> None:
    lines = [
        _line(unit, cycle, value=unit * 10 + cycle) + padding
        for unit, length in enumerate(lengths, start=1)
        for cycle in range(1, length + 1)
    ]
    data = parse_trajectories("\n".join(lines))
    assert data.unit_lengths.tolist() == lengths
    assert data.settings[0, 0] == pytest.approx(11.0)
    victim = broken.draw(st.integers(0, len(lines) - 1))
    lines[victim] = " ".join(lines[victim].split()[:-1])
    with pytest.raises(CmapssFormatError) as caught:
        parse_trajectories("\n".join(lines))
    assert caught.value.line == victim + 1


# --- features and protocol -------------------------------------------------------------------


def test_fd001_has_one_operating_condition_and_drops_flat_sensors(fd001: Trajectories) -> None:
    normaliser = SensorNormaliser.fit(fd001)
    assert normaliser.conditions.count == 1
    kept = [2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21]
    assert normaliser.sensor_names == [f"s{i}" for i in kept]


def test_six_flight_regimes_are_found_and_normalised_away() -> None:
    rng = np.random.default_rng(1)
    regimes = np.array(
        [
            [0, 0, 100],
            [10, 0.25, 100],
            [20, 0.7, 100],
            [25, 0.62, 60],
            [35, 0.84, 100],
            [42, 0.84, 100],
        ],
        dtype=float,
    )
    label = rng.integers(0, 6, 3000)
    settings_ = regimes[label] + rng.normal(0, [0.002, 0.0003, 0.0], (3000, 3))
    wear = np.tile(np.linspace(0, 1, 100), 30)
    sensors = rng.normal(0, 0.1, (3000, 21)) + 50 * regimes[label][:, :1] + wear[:, None]
    data = Trajectories(
        unit=np.repeat(np.arange(1, 31), 100),
        cycle=np.tile(np.arange(1, 101), 30),
        settings=settings_,
        sensors=sensors,
    )
    conditions = OperatingConditions.fit(settings_)
    assert conditions.count == 6
    z = SensorNormaliser.fit(data).transform(data)
    # Raw sensors are dominated by the regime; normalised ones follow the wear.
    assert abs(np.corrcoef(sensors[:, 0], wear)[0, 1]) < 0.1
    assert np.corrcoef(z[:, 0], wear)[0, 1] > 0.9


def test_features_of_a_cut_trajectory_equal_the_rows_of_the_full_one(fd001: Trajectories) -> None:
    data = fd001.select_units([1, 2, 3])
    model = train_model(fd001.select_units(range(1, 13)), FAST.with_overrides(max_rounds=20))
    cut = data.truncate({1: 50, 2: 31, 3: 120})
    full = model.features(data)
    rows = np.flatnonzero(
        (data.unit == 1) & (data.cycle == 50)
        | (data.unit == 2) & (data.cycle == 31)
        | (data.unit == 3) & (data.cycle == 120)
    )
    np.testing.assert_array_equal(model.features(cut)[cut.last_rows], full[rows])


def test_truncation_draws_the_official_range(fd001: Trajectories) -> None:
    rows, true_rul = truncation_rows(fd001, seed=0, repeat=0)
    observed = rows - fd001.unit_starts + 1
    assert true_rul.min() >= TRUE_RUL_MIN and true_rul.max() <= TRUE_RUL_MAX
    assert observed.min() >= MIN_OBSERVED_CYCLES
    np.testing.assert_array_equal(row_rul(fd001)[rows], true_rul)
    again, _ = truncation_rows(fd001, seed=0, repeat=0)
    other, _ = truncation_rows(fd001, seed=0, repeat=1)
    assert (again == rows).all() and (other != rows).any()


def test_phm08_score_punishes_late_predictions_more() -> None:
    assert phm08_score(np.array([0.0]), np.array([13.0])) == pytest.approx(math.e - 1)
    assert phm08_score(np.array([10.0]), np.array([0.0])) == pytest.approx(math.e - 1)
    assert phm08_score(np.array([20.0]), np.array([10.0])) > phm08_score(
        np.array([0.0]), np.array([10.0])
    )


# --- model -----------------------------------------------------------------------------------


def test_model_beats_naive_baselines_by_far(fd001: Trajectories) -> None:
    report = evaluate(fd001.select_units(range(1, 31)), folds=2, seed=3, repeats=2, config=FAST)
    assert report["rmse"] < 0.6 * report["baseline"]["mean_rul"]["rmse"]
    assert report["rmse"] < report["baseline"]["linear_last_cycle"]["rmse"]
    assert report["rmse"] < 20
    assert len(report["folds"]) == 2 and len(report["rmse_by_repeat"]) == 2


def test_training_is_deterministic_for_a_seed(fd001: Trajectories) -> None:
    train = fd001.select_units(range(1, 16))
    test = fd001.select_units(range(90, 95)).truncate({u: 60 for u in range(90, 95)})
    config = FAST.with_overrides(max_rounds=60)
    first = train_model(train, config).predict_last(test)[1]
    second = train_model(train, config).predict_last(test)[1]
    other_seed = train_model(train, config.with_overrides(seed=1)).predict_last(test)[1]
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other_seed)


# --- CLI -------------------------------------------------------------------------------------


def test_predict_writes_one_row_per_test_unit(fd001: Trajectories, tmp_path: Path) -> None:
    train = _write(tmp_path / "train.txt", fd001.select_units(range(1, 21)))
    cut = {81: 40, 82: 100, 85: 150}
    test = _write(tmp_path / "test.txt", fd001.select_units(list(cut)).truncate(cut))
    out = tmp_path / "out" / "rul.csv"
    result = CliRunner().invoke(
        cmapss_app,
        ["predict", "--train", str(train), "--test", str(test), "--out", str(out)]
        + ["--config", FAST_JSON],
    )
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "unit,predicted_rul"
    units = [int(line.split(",")[0]) for line in lines[1:]]
    predicted = [float(line.split(",")[1]) for line in lines[1:]]
    assert units == [81, 82, 85]
    assert all(0 <= p <= 125 for p in predicted)
    assert predicted[0] > predicted[2]  # 40 cycles in is healthier than 150 cycles in


def test_predict_rejects_a_bad_test_file_before_training(tmp_path: Path) -> None:
    test = tmp_path / "test.txt"
    test.write_text(_line(1, 1) + "\n" + _line(1, 2)[:-10] + "\n")
    result = CliRunner().invoke(
        cmapss_app,
        [
            "predict",
            "--train",
            str(tmp_path / "nope.txt"),
            "--test",
            str(test),
            "--out",
            str(tmp_path / "o.csv"),
        ],
    )
    assert result.exit_code == 2
    assert "test.txt, line 2: expected 26" in result.output.replace("\n", "")
    assert not (tmp_path / "o.csv").exists()


def test_evaluate_prints_one_json_line(fd001: Trajectories, tmp_path: Path) -> None:
    train = _write(tmp_path / "train.txt", fd001.select_units(range(1, 17)))
    result = CliRunner().invoke(
        cmapss_app,
        ["evaluate", "--train", str(train), "--folds", "2", "--repeats", "1"]
        + ["--config", FAST_JSON],
    )
    assert result.exit_code == 0, result.output
    json_lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1
    report = json.loads(json_lines[0])
    for key in ("rmse", "phm08", "folds", "baseline", "elapsed_s"):
        assert key in report


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ('{"num_leafs": 7}', "no field 'num_leafs'"),
        ('{"learning_rate": "fast"}', "learning_rate must be float"),
        ('{"inner_folds": 1}', "inner_folds must be at least 2"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_bad_model_overrides_are_refused_before_reading_data(
    tmp_path: Path, overrides: str, fragment: str
) -> None:
    result = CliRunner().invoke(
        cmapss_app, ["evaluate", "--train", str(tmp_path / "absent.txt"), "--config", overrides]
    )
    assert result.exit_code == 2
    assert fragment in result.output.replace("\n", "")
