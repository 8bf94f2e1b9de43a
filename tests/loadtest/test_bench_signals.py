"""``loadtest.bench_signals`` runs end to end on a small archive and prints its JSON line (the
benchmark itself asserts that both paths read the same rows and that a vehicle without data
is found nowhere)."""

from __future__ import annotations

import json

import pytest

from loadtest import bench_signals


def test_a_small_run_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--days", "4", "--vehicles", "2", "--rolls-per-day", "2", "--lookback-days", "2"]
    assert bench_signals.main([*args, "--repeat", "1", "--json-only"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["benchmark"] == "signals"
    assert result["archive"] == {"days": 4, "files": 8, "rows": 4 * 2 * 2 * 50}
    assert result["with_data"]["rows"] > 0 and result["with_data"]["ratio"] > 0
    assert result["without_data"]["lookback_days"] == 2


def test_sizes_below_one_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench_signals.main(["--days", "0"])
    assert exit_.value.code == 2
    assert "--days must be at least 1" in capsys.readouterr().err
