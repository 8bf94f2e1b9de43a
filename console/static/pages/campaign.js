// One campaign: the dry run before launch, approval and launch, then per-wave progress
// against the gate, automatic pauses with their reason, failures by error code and hardware,
// and the operator's controls (pause, resume, abort, retry failed). Polls while it runs.

import { api } from "../api.js";
import { pauseHeadline, pauseReasonText, waveName } from "../campaigns.js";
import {
  actionButton, badge, clear, empty, errorBox, fmtNum, fmtPct, fmtTime, h, kv, link, poll,
  progressBar, section, stat, table, toast,
} from "../ui.js";

function targetText(filter) {
  const parts = Object.entries(filter || {})
    .filter(([, v]) => v !== null && !(Array.isArray(v) && v.length === 0))
    .map(([k, v]) => `${k.replaceAll("_", " ")}: ${Array.isArray(v) ? v.map((x) => (typeof x === "object" ? JSON.stringify(x) : x)).join(", ") : v}`);
  return parts.length ? parts.join("; ") : "every vehicle";
}

function waveBlock(wave, index, campaign) {
  const gate = campaign.gate || {};
  const limit = gate.max_failure_rate ?? 0.05;
  const reported = wave.succeeded + wave.failed;
  const over = reported > 0 && wave.failure_rate_upper > limit;
  const current = index === campaign.current_wave && ["running", "paused"].includes(campaign.state);
  return h("div", { class: "wave", dataset: { test: `wave-${index}`, decision: wave.decision } },
    h("h3", {}, waveName(index, campaign.waves.length), " · ", campaign.waves[index], " · ",
      `${fmtNum(wave.vehicles)} vehicles`, current ? h("span", {}, " ", badge("current", "running")) : null),
    progressBar([
      { value: wave.succeeded, kind: "succeeded", label: "succeeded" },
      { value: wave.failed, kind: "failed", label: "failed" },
      { value: wave.in_progress, kind: "in_progress", label: "in progress" },
      { value: wave.not_started, kind: "pending", label: "not started" },
    ], wave.vehicles, {
      label: `${wave.succeeded}/${wave.vehicles} succeeded, ${wave.failed} failed, `
        + `${wave.in_progress} in progress, ${wave.not_started} not started`,
    }),
    h("div", { class: "gate" },
      h("span", { class: over ? "gate-over" : "" }, reported
        ? `Failure rate ${fmtPct(wave.failed / reported)} of ${reported} reports (95 % upper bound ${fmtPct(wave.failure_rate_upper)})`
        : "No reports yet"),
      ` vs gate ${fmtPct(limit)} · needs ${fmtPct(gate.success_threshold ?? 0.95)} success · decision: `,
      badge(wave.decision, wave.decision === "pause" ? "failed" : wave.decision === "complete" ? "completed" : "pending")));
}

function dryRunBlock(dry) {
  const blocked = Object.entries(dry.blocked || {});
  const notTargeted = Object.entries(dry.not_targeted || {});
  return h("div", { dataset: { test: "dry-run" } },
    h("div", { class: "stats" },
      stat("eligible vehicles", fmtNum(dry.eligible), "ok"),
      stat("blocked", fmtNum(blocked.reduce((a, [, n]) => a + n, 0)), blocked.length ? "attention" : ""),
      stat("wave sizes", dry.wave_sizes.join(" / ")),
      stat("expected duration", `${fmtNum(dry.expected_duration_s / 60, 0)} min`)),
    blocked.length ? h("div", {}, h("h3", {}, "Targeted but blocked"), table([
      { label: "Reason", value: ([reason]) => reason },
      { label: "Vehicles", value: ([, n]) => fmtNum(n), class: "num" },
      { label: "Examples", value: ([reason]) => (dry.examples[reason] || []).join(", ") },
    ], blocked)) : null,
    notTargeted.length ? h("p", { class: "muted" }, "Not targeted: ",
      notTargeted.map(([reason, n]) => `${reason} ${fmtNum(n)}`).join(", ")) : null);
}

export async function render(root, { campaignId }) {
  const path = `/v1/ota/campaigns/${campaignId}`;
  const header = h("div", { class: "page-header" });
  const pauseBox = h("div", {});
  const actions = h("div", { class: "actions", id: "campaign-actions" });
  const dryBox = h("div", {});
  const wavesBox = h("div", { id: "waves" });
  const failuresBox = h("div", { id: "failures" });
  const facts = h("div", {});
  const drySection = section("Dry run", dryBox);
  root.append(header, pauseBox, actions, drySection,
    section("Waves", wavesBox), section("Failures by error code and hardware", failuresBox),
    section("Campaign", facts));
  let image = null;
  let lastState = null;

  async function act(verb, label) {
    const result = await api.post(`${path}/${verb}`);
    toast(verb === "retry-failed" ? `Retrying ${result.retried} failed vehicles` : `${label}: ${result.state}`, "ok");
    await refresh();
  }

  async function runDryRun() {
    clear(dryBox).append(h("p", { class: "muted" }, "Running the dry run…"));
    const dry = await api.post(`${path}/dry-run`);
    clear(dryBox).append(dryRunBlock(dry));
  }

  function renderActions(c) {
    clear(actions);
    const approved = !c.requires_approval || c.approved_by;
    if (c.state === "draft") {
      actions.append(actionButton("Re-run dry run", runDryRun, { kind: "secondary", id: "action-dry-run" }));
      if (c.requires_approval && !c.approved_by) {
        actions.append(actionButton("Approve", () => act("approve", "Approved"), { id: "action-approve" }));
      }
    }
    if (c.state === "draft" || c.state === "approved") {
      const launch = actionButton("Launch", () => act("launch", "Launched"), {
        id: "action-launch", confirmText: `Launch "${c.name}" to the first wave now?` });
      if (!approved) { launch.disabled = true; launch.title = "Needs approval by a second operator first"; }
      actions.append(launch);
    }
    if (c.state === "running") actions.append(actionButton("Pause", () => act("pause", "Paused"), { kind: "secondary", id: "action-pause" }));
    if (c.state === "paused") actions.append(actionButton("Resume", () => act("resume", "Resumed"), { id: "action-resume" }));
    if (["running", "paused", "completed"].includes(c.state)) {
      actions.append(actionButton("Retry failed", () => act("retry-failed"), { kind: "secondary", id: "action-retry" }));
    }
    if (!["completed", "aborted"].includes(c.state)) {
      actions.append(actionButton("Abort", () => act("abort", "Aborted"), {
        kind: "danger", id: "action-abort", confirmText: `Abort "${c.name}"? Vehicles that have not started will not get it.` }));
    }
  }

  async function refresh() {
    const status = await api.get(path);
    const c = status.campaign;
    if (!image) image = await api.get(`/v1/ota/images/${c.image_id}`).catch(() => null);
    clear(header).append(h("h1", {}, c.name), h("span", { id: "campaign-state", dataset: { state: c.state } }, badge(c.state)),
      h("span", { class: "spacer" }), link("#/ota", "← all campaigns"));
    clear(pauseBox);
    if (c.state === "paused" && c.pause_reason) {
      const headline = pauseHeadline(c.pause_reason, c.current_wave, c.waves.length);
      pauseBox.append(h("div", { class: "alert alert-warning", id: "pause-reason", dataset: { code: c.pause_reason.code } },
        headline ? h("strong", {}, headline) : null, pauseReasonText(c.pause_reason)));
    }
    if (c.state !== lastState) renderActions(c);
    drySection.hidden = !["draft", "approved"].includes(c.state);
    if (!drySection.hidden && lastState === null) await runDryRun();
    lastState = c.state;
    clear(wavesBox).append(...(c.state === "draft" || c.state === "approved"
      ? [empty("Waves start when the campaign is launched.")]
      : status.waves.map((w, i) => waveBlock(w, i, c))));
    clear(failuresBox).append(table([
      { label: "Error code", value: (f) => h("code", {}, f.error_code) },
      { label: "Hardware", value: (f) => f.hardware_id },
      { label: "Vehicles", value: (f) => fmtNum(f.vehicles), class: "num" },
      { label: "Reports", value: (f) => fmtNum(f.reports), class: "num" },
      { label: "Examples", value: (f) => f.example_vins.map((vin) => [link(`#/vehicles/${vin}`, vin), " "]) },
    ], status.failures, { emptyText: "No failures reported." }));
    clear(facts).append(kv({
      Image: image ? `${image.name} ${image.version} (counter ${image.release_counter}; ${image.hardware_ids.join(", ")})` : c.image_id,
      "Update kind": c.update_kind,
      Targets: targetText(c.target_filter),
      Waves: c.waves.join(" → "),
      Gate: `success ≥ ${fmtPct(c.gate.success_threshold)}, failure rate ≤ ${fmtPct(c.gate.max_failure_rate)}, after ${c.gate.min_reports} reports`,
      Preconditions: Object.keys(c.preconditions).length ? JSON.stringify(c.preconditions) : "none",
      "Created by": `${c.created_by}, ${fmtTime(c.created_at)}`,
      "Approved by": c.approved_by || (c.requires_approval ? "not yet" : "not required"),
      Launched: fmtTime(c.launched_at),
      Finished: fmtTime(c.finished_at),
    }));
  }

  try {
    await refresh();
  } catch (err) {
    clear(root).append(errorBox(err));
    return undefined;
  }
  return poll(async () => {
    try { await refresh(); } catch (err) { toast(err.message, "error"); }
  }, 2000);
}
