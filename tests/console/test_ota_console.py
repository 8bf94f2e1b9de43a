"""The issue's browser scenario: operators run OTA campaigns from the console against a running
stack (the API under uvicorn, the ``ota`` worker, Kafka, PostgreSQL) while a simulated fleet of
Uptane clients checks in, installs and reports (half over HTTP, half over Kafka).

1. An operator logs in, uploads an image, creates a campaign that needs a second approval and
   sees its dry run (eligible vehicles, wave sizes) before anything can be launched; Launch
   stays disabled. A second operator approves and launches it, pauses and resumes it (before
   the fleet checks in, so nothing has started); then the page shows the canary wave
   completing and then the whole campaign.
2. A release that fails to flash on one hardware variant pauses itself in its canary: the page
   shows the automatic pause with its reason and the failures grouped by error code and
   hardware. The operator retries the failed vehicles, they fail again and the gate pauses it
   again; the operator aborts it.

Screenshots of each step go to ``test-output/console/``.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from core import audit
from core.config import Settings
from core.db import make_engine, session_scope
from simulator.ota_fleet import FleetLog, KafkaReports, SimulatedOtaVehicle, run_fleet
from tests.console.conftest import Watched
from tests.ota.harness import BAD_HARDWARE, ota_worker, prepare, simulated_fleet

pytestmark = pytest.mark.kafka

FLEET_SIZE = 40
# A canary of 12 from a fleet that is half BMS-HW-2 misses that variant with probability
# C(20,12)/C(40,12) < 3e-5.
GOOD_WAVES, GOOD_SIZES = "5, 100%", [5, 35]
BAD_WAVES, BAD_CANARY = "12, 100%", 12
WAVE_TIMEOUT_MS = 120_000


def test_operators_launch_a_campaign_watch_it_complete_and_see_a_bad_release_pause(
    console: Watched, console_url: str, settings: Settings, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    model = f"WEB-{suffix}"
    engine = make_engine(settings)
    try:
        fleet, creator, approver = prepare(
            engine, settings, model, FLEET_SIZE, operator_role="fleet_operator"
        )
    finally:
        engine.dispose()
    page = console.page
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations of launch and abort
    campaigns: list[str] = []
    with (
        ota_worker(settings) as worker_alive,
        httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=16)) as http,
        KafkaReports(settings.bootstrap_servers, settings.ota_reports_topic) as kafka,
    ):
        vehicles = simulated_fleet(fleet, console_url, http, tmp_path, kafka, FleetLog(), suffix)
        try:
            # Launched, paused and resumed before any vehicle checks in: nothing has started.
            good = _launch_pause_and_resume(console, creator, approver, model, suffix, campaigns)
            with _fleet_running(vehicles):
                _watch_a_good_release_complete(console)
                _see_a_bad_release_pause(console, settings, model, suffix, campaigns)
        finally:
            _abort_unfinished(http, console_url, approver[1], campaigns)
        assert good == campaigns[0]
        assert _actions(settings, good) == [
            ("campaign.create", "operator"),
            ("campaign.approve", "operator"),
            ("campaign.launch", "operator"),
            ("campaign.pause", "operator"),
            ("campaign.resume", "operator"),
            ("campaign.complete", "gate"),
        ]
        worker_alive()
    # Everyone got 2.0.0; 3.0.0 reached only canary vehicles on the hardware it flashes on.
    counters = [(v.ecus["BMS"].release_counter, v.ecus["BMS"].hardware_id) for v in vehicles]
    assert {counter for counter, _hw in counters} <= {2, 3}, counters
    on_bad = [hw for counter, hw in counters if counter == 3]
    assert len(on_bad) < BAD_CANARY and BAD_HARDWARE not in on_bad, counters


def _launch_pause_and_resume(
    console: Watched,
    creator: tuple[str, str],
    approver: tuple[str, str],
    model: str,
    suffix: str,
    campaigns: list[str],
) -> str:
    page = console.page
    console.log_in(creator[1])
    page.click("#nav a[data-page=ota]")
    image = _upload(page, suffix, "2.0.0", 2)
    console.screenshot("ota-image-uploaded")
    campaign_id = _create(page, f"BMS 2.0.0 {suffix}", image, model, GOOD_WAVES, approval=True)
    campaigns.append(campaign_id)

    # The dry run comes first: every vehicle of the model is eligible, in waves of 5 and 35.
    dry = page.locator("[data-test=dry-run]")
    expect(dry).to_contain_text(f"{FLEET_SIZE}eligible vehicles")
    expect(dry).to_contain_text("/".join(str(n) for n in GOOD_SIZES).replace("/", " / "))
    expect(page.locator("#action-launch")).to_be_disabled()  # four eyes: not approved yet
    expect(page.locator("#action-approve")).to_be_visible()
    console.screenshot("campaign-dry-run")

    # The creator may not approve their own campaign: the API says so, the page shows it.
    page.click("#action-approve")
    expect(page.locator(".toast-error")).to_contain_text("creator")

    console.log_out()
    console.log_in(approver[1])
    page.goto(f"/console#/ota/campaigns/{campaign_id}")
    page.click("#action-approve")
    expect(page.locator("#action-launch")).to_be_enabled()
    page.click("#action-launch")
    state = page.locator("#campaign-state")
    expect(state).to_have_attribute("data-state", "running")
    console.screenshot("campaign-launched")

    # The operator pauses it (the canary's offers are withdrawn) and resumes it (offered again).
    page.click("#action-pause")
    expect(state).to_have_attribute("data-state", "paused")
    expect(page.locator("#pause-reason")).to_have_attribute("data-code", "operator")
    expect(page.locator("#pause-reason")).to_have_text(f"Paused by {approver[0]}.")
    console.screenshot("campaign-paused-by-operator")
    page.click("#action-resume")
    expect(state).to_have_attribute("data-state", "running")
    expect(page.locator("#pause-reason")).to_have_count(0)
    expect(page.locator(".toast-ok").last).to_contain_text("Resumed: running")
    return campaign_id


def _watch_a_good_release_complete(console: Watched) -> None:
    """The resumed campaign, now that the fleet checks in."""
    page = console.page
    # The canary wave completes (its gate decision), then the campaign.
    canary = page.locator("[data-test=wave-0]")
    expect(canary).to_have_attribute("data-decision", "complete", timeout=WAVE_TIMEOUT_MS)
    expect(canary).to_contain_text(f"{GOOD_SIZES[0]}/{GOOD_SIZES[0]} succeeded")
    console.screenshot("campaign-canary-complete")
    expect(page.locator("#campaign-state")).to_have_attribute(
        "data-state", "completed", timeout=WAVE_TIMEOUT_MS
    )
    expect(page.locator("[data-test=wave-1]")).to_contain_text(
        f"{GOOD_SIZES[1]}/{GOOD_SIZES[1]} succeeded"
    )
    expect(page.locator("#failures")).to_contain_text("No failures reported")
    console.screenshot("campaign-completed")


def _see_a_bad_release_pause(
    console: Watched, settings: Settings, model: str, suffix: str, campaigns: list[str]
) -> None:
    page = console.page
    page.goto("/console#/ota")
    image = _upload(page, suffix, "3.0.0", 3)  # the fleet fails to flash it on BMS-HW-2
    campaign_id = _create(
        page, f"BMS 3.0.0 {suffix}", image, model, BAD_WAVES, approval=False, kind="forced"
    )
    campaigns.append(campaign_id)
    expect(page.locator("[data-test=dry-run]")).to_contain_text(f"{FLEET_SIZE}eligible vehicles")
    page.click("#action-launch")

    pause = page.locator("#pause-reason")
    expect(pause).to_be_visible(timeout=WAVE_TIMEOUT_MS)
    expect(page.locator("#campaign-state")).to_have_attribute("data-state", "paused")
    expect(pause).to_contain_text("Paused automatically by the gate in wave 1 (canary)")
    code = pause.get_attribute("data-code")
    assert code in ("success_threshold_unreachable", "failure_rate_above_limit"), code
    failures = page.locator("#failures tbody tr")
    expect(failures).to_have_count(1)
    expect(failures.first).to_contain_text("E_FLASH_VERIFY")
    expect(failures.first).to_contain_text(BAD_HARDWARE)
    canary = page.locator("[data-test=wave-0]")
    expect(canary).to_have_attribute("data-decision", "pause")
    expect(canary).to_contain_text(re.compile(rf"\d+/{BAD_CANARY} succeeded, [1-9]\d* failed"))
    expect(page.locator("[data-test=wave-1]")).to_contain_text(
        f"0/{FLEET_SIZE - BAD_CANARY} succeeded"
    )
    console.screenshot("campaign-paused-by-gate")

    # Retry failed: the failed vehicles get a new attempt and the campaign runs again; they
    # fail to flash again, and the gate pauses it again.
    page.click("#action-retry")
    expect(page.locator(".toast-ok").last).to_contain_text(
        re.compile(r"Retrying [1-9]\d* failed vehicles")
    )
    # The page shows "paused" until its next refresh, so wait for the gate's second pause in
    # the audit trail, then see it on the page.
    _wait_for_actions(settings, campaign_id, ["campaign.retry", "campaign.pause"])
    state = page.locator("#campaign-state")
    expect(state).to_have_attribute("data-state", "paused")
    expect(pause).to_contain_text("Paused automatically by the gate in wave 1 (canary)")
    expect(failures.first).to_contain_text(BAD_HARDWARE)
    console.screenshot("campaign-paused-again-after-retry")

    page.click("#action-abort")
    expect(state).to_have_attribute("data-state", "aborted")
    console.screenshot("campaign-aborted")
    assert _actions(settings, campaign_id) == [
        ("campaign.create", "operator"),
        ("campaign.launch", "operator"),
        ("campaign.pause", "gate"),
        ("campaign.retry", "operator"),
        ("campaign.pause", "gate"),
        ("campaign.abort", "operator"),
    ]


def _actions(settings: Settings, campaign_id: str) -> list[tuple[str, str]]:
    """The campaign's audit trail, oldest first: (action, who: the gate or an operator)."""
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            events = audit.list_events(session, subject=f"campaign:{campaign_id}")
            return [(e.action, "gate" if e.actor == "gate" else "operator") for e in events][::-1]
    finally:
        engine.dispose()


def _wait_for_actions(settings: Settings, campaign_id: str, tail: list[str]) -> None:
    deadline = time.monotonic() + WAVE_TIMEOUT_MS / 1000
    while [a for a, _who in _actions(settings, campaign_id)][-len(tail) :] != tail:
        assert time.monotonic() < deadline, _actions(settings, campaign_id)
        time.sleep(0.2)


def _upload(page: Page, suffix: str, version: str, counter: int) -> str:
    """Upload through the form; returns the image's label in the campaign form."""
    firmware = f"BMS firmware {version} {suffix}\n".encode() + random.randbytes(16_384)
    page.set_input_files(
        "#image-file",
        files=[
            {
                "name": f"bms-{version}.bin",
                "mimeType": "application/octet-stream",
                "buffer": firmware,
            }
        ],
    )
    page.fill("#image-name", f"bms-fw-{suffix}")
    page.fill("#image-version", version)
    page.fill("#image-release-counter", str(counter))
    page.fill("#image-hardware", "BMS-HW-1, BMS-HW-2")
    page.click("#image-upload")
    expect(page.locator(".toast-ok").last).to_contain_text(f"Uploaded bms-fw-{suffix} {version}")
    return f"bms-fw-{suffix} {version} (counter {counter})"


def _create(
    page: Page,
    name: str,
    image: str,
    model: str,
    waves: str,
    *,
    approval: bool,
    kind: str = "soft",
) -> str:
    page.fill("#campaign-name", name)
    page.select_option("#campaign-image", label=image)
    page.fill("#campaign-models", model)
    page.fill("#campaign-regions", "EU")
    page.fill("#campaign-waves", waves)
    page.select_option("#campaign-kind", kind)
    page.set_checked("#campaign-approval", approval)
    page.click("#campaign-create")
    page.wait_for_url(re.compile(r"#/ota/campaigns/[0-9a-f-]{36}$"))
    expect(page.locator("#view h1")).to_have_text(name)
    return page.url.rsplit("/", 1)[1]


@contextmanager
def _fleet_running(vehicles: list[SimulatedOtaVehicle]) -> Iterator[None]:
    """The fleet checks in, installs and reports on threads of its own until the block ends."""
    stop = threading.Event()
    runs = []
    thread = threading.Thread(
        target=lambda: runs.append(run_fleet(vehicles, stop.is_set, 600.0, 4, poll_interval_s=2.0)),
        name="fleet",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60.0)
    [run] = runs
    assert not run.errors, run.error_samples
    assert not [r for v in vehicles for r in v.refused_reports]


def _abort_unfinished(http: httpx.Client, base_url: str, token: str, campaigns: list[str]) -> None:
    """Leave no active campaign in the shared database, even when the test failed."""
    headers = {"Authorization": f"Bearer {token}"}
    for campaign_id in campaigns:
        url = f"{base_url}/v1/ota/campaigns/{campaign_id}"
        state = http.get(url, headers=headers).json()["campaign"]["state"]
        if state in ("draft", "approved", "running", "paused"):
            http.post(f"{url}/abort", headers=headers)
