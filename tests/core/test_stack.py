"""``fleet demo`` end to end: API, archive worker and a simulated fleet on a real broker,
ending with one JSON line in which every accepted message is accounted for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_demo_prints_counts_that_add_up(kafka_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FLEET_DATA_DIR": str(tmp_path),
        "FLEET_TELEMETRY_TOPIC": f"telemetry.v1.demo-{suffix}",
        "FLEET_TELEMETRY_DLQ_TOPIC": f"telemetry.dlq.demo-{suffix}",
        "FLEET_TOPIC_PARTITIONS": "3",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from core.cli import main; main()",
            "demo",
            "--vehicles",
            "12",
            "--duration",
            "12",
            "--malformed-rate",
            "0.05",
            "--duplicate-rate",
            "0.05",
            "--kafka-share",
            "0.5",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "vehicles",
        "messages_sent",
        "messages_accepted",
        "messages_archived",
        "dead_lettered",
        "duplicates_dropped",
        "elapsed_s",
    ):
        assert key in counts
    assert counts["vehicles"] == 12
    assert counts["messages_archived"] > 0
    assert counts["unaccounted"] == 0, counts
    assert counts["messages_sent"] >= counts["messages_accepted"] + counts["messages_rejected"]
