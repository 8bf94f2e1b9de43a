"""The Locust load test: its thresholds judge a stats file, and a short run against a seeded
stack (the suite's Kafka broker) exercises every scenario's requests and writes its reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.thresholds import (
    MIN_REQUESTS_FOR_P95,
    THRESHOLDS,
    Threshold,
    evaluate,
    read_stats_csv,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def stats_csv(path: Path, rows: list[tuple[str, str, int, int, int, int, int]]) -> Path:
    """A ``locust_stats.csv`` as Locust writes it: (method, name, requests, failures, p50,
    p95, p99) per row, then the ``Aggregated`` row."""
    lines = [HEADER]
    for method, name, requests, failures, p50, p95, p99 in rows:
        lines.append(
            f"{method},{name},{requests},{failures},{p50},{p50 * 1.2},1,{p99 * 2},2100,"
            f"{requests / 60:.3f},{failures / 60:.3f},"
            f"{p50},{p50},{p50},{p95},{p95},{p95},{p99},{p99},{p99},{p99},{p99 * 2}"
        )
    total = sum(r[2] for r in rows)
    lines.append(f",Aggregated,{total},0,20,25,1,400,2100,{total / 60:.3f},0,"
                 "20,22,25,30,40,50,60,70,80,90,400")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_thresholds_judge_p95_errors_and_missing_requests(tmp_path: Path) -> None:
    limits = {
        "POST /v1/telemetry": Threshold("vehicles", 100.0, 0.01, "test"),
        "GET /v1/bookings": Threshold("service_centers", 200.0, 0.01, "test"),
        "GET /v1/ota/campaigns": Threshold("operators", 200.0, 0.01, "test"),
    }
    path = stats_csv(tmp_path / "locust_stats.csv", [
        ("POST", "/v1/telemetry", 5000, 10, 20, 90, 140),  # 0.2 % errors, p95 under 100
        ("GET", "/v1/bookings", 100, 0, 30, 250, 300),  # p95 over 200
        ("GET", "/v1/partner/ubi/scores", 40, 2, 10, 20, 30),  # unlisted: default, 5 % errors
    ])
    rows = read_stats_csv(path)
    assert [r.key for r in rows] == [
        "POST /v1/telemetry", "GET /v1/bookings", "GET /v1/partner/ubi/scores"
    ]
    assert rows[0].p95_ms == 90.0 and rows[0].error_ratio == pytest.approx(0.002)

    evaluation = evaluate(rows, limits)
    verdicts = {v.key: v for v in evaluation.verdicts}
    assert not evaluation.passed
    assert verdicts["POST /v1/telemetry"].passed
    assert verdicts["GET /v1/bookings"].breaches == ("p95 250 ms > 200 ms",)
    assert "error ratio 5.00% > 1.00%" in verdicts["GET /v1/partner/ubi/scores"].breaches[0]
    assert verdicts["GET /v1/ota/campaigns"].breaches == ("never sent",)

    # The same telemetry row fails a purposely tight limit, and passes a loose one.
    tight = {"POST /v1/telemetry": Threshold("vehicles", 50.0, 0.001, "tight")}
    breaches = evaluate(rows[:1], tight).breaches
    assert breaches == [
        "POST /v1/telemetry: p95 90 ms > 50 ms",
        "POST /v1/telemetry: error ratio 0.20% > 0.10% (10 of 5000)",
    ]
    assert evaluate(rows[:1], {"POST /v1/telemetry": Threshold("v", 95.0, 0.01, "")}).passed


def test_a_p95_of_a_few_requests_is_not_judged(tmp_path: Path) -> None:
    few = MIN_REQUESTS_FOR_P95 - 1
    path = stats_csv(tmp_path / "locust_stats.csv", [
        ("GET", "/v1/ota/campaigns", few, 0, 20, 900, 900),
        ("GET", "/v1/bookings", MIN_REQUESTS_FOR_P95, 0, 20, 900, 900),
        ("GET", "/v1/ota/campaigns/{campaign_id}", 4, 4, 20, 30, 30),  # all failed
    ])
    limits = {
        "GET /v1/ota/campaigns": Threshold("operators", 500.0, 0.01, "test"),
        "GET /v1/bookings": Threshold("service_centers", 500.0, 0.01, "test"),
        "GET /v1/ota/campaigns/{campaign_id}": Threshold("operators", 500.0, 0.5, "test"),
    }
    verdicts = {v.key: v for v in evaluate(read_stats_csv(path), limits).verdicts}
    assert verdicts["GET /v1/ota/campaigns"].passed
    assert not verdicts["GET /v1/ota/campaigns"].p95_judged
    assert verdicts["GET /v1/bookings"].breaches == ("p95 900 ms > 500 ms",)
    assert verdicts["GET /v1/ota/campaigns/{campaign_id}"].breaches == (
        "no successful request", "error ratio 100.00% > 50.00% (4 of 4)"
    )


def test_every_request_has_a_documented_threshold() -> None:
    documented = (REPO_ROOT / "docs" / "loadtest.md").read_text()
    for key, threshold in THRESHOLDS.items():
        assert threshold.p95_ms > 0 and 0 <= threshold.max_error_ratio < 1
        assert f"`{key}`" in documented, f"{key} is not in docs/loadtest.md"


def test_short_run_exercises_every_scenario(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    command = [
        sys.executable, "-m", "loadtest.run_locust", "--seconds", "15", "--users", "10",
        "--spawn-rate", "10", "--bootstrap", kafka_bootstrap, "--out", str(out),
        "--timeout", "150",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ})
    try:
        stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # it stops the stack it started
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"the load test did not finish in time:\n{stderr.decode()[-3000:]}")
    lines = stdout.decode().splitlines()
    assert len(lines) == 1, stdout.decode()
    result = json.loads(lines[0])
    assert "errors" not in result, (result["errors"], stderr.decode()[-3000:])

    for report in ("report.html", "locust_stats.csv", "locust_failures.csv",
                   "locust_stats_history.csv"):
        assert (out / report).stat().st_size > 0, report
    stats = {row.key: row for row in read_stats_csv(out / "locust_stats.csv")}
    for key in THRESHOLDS:  # every scenario's named requests, answered successfully
        assert key in stats, f"{key} was never sent"
        assert stats[key].requests > stats[key].failures, f"{key}: no success"
    assert set(stats) == set(THRESHOLDS), "a request without a route-template name"
    assert result["requests"].keys() == stats.keys()
    assert result["archive"]["lost"] == 0
    assert result["passed"] is True, result["breaches"]
    assert process.returncode == 0
