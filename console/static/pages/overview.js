// The fleet at a glance (#/overview): health, alarms, predictions, DTCs, campaigns and Kafka,
// from GET /v1/fleet/overview, refreshed every 5 s.

import { api } from "../api.js";
import { pauseHeadline, pauseReasonText } from "../campaigns.js";
import {
  badge, clear, fmtNum, fmtPct, fmtTime, h, link, poll, progressBar, section, stat,
  table, unavailable,
} from "../ui.js";

const REFRESH_MS = 5000;

export async function render(root) {
  const updated = h("span", { class: "muted", "data-test": "updated" });
  const body = h("div", { id: "overview-body" });
  root.append(
    h("div", { class: "page-header" }, h("h1", {}, "Fleet overview"), h("span", { class: "spacer" }), updated),
    body,
  );

  let stopped = false;
  let stop = () => {};
  const refresh = async () => {
    let overview;
    try {
      overview = await api.get("/v1/fleet/overview");
    } catch (err) {
      if (stopped) return;
      clear(body).append(section("Overview", unavailable(err)));
      if (err.status === 403) stop(); // asking again will not change the role
      return;
    }
    if (stopped) return;
    clear(body).append(...view(overview).filter(Boolean));
    updated.textContent = `updated ${fmtTime(new Date()).slice(11)}`;
  };
  stop = poll(refresh, REFRESH_MS);
  return () => { stopped = true; stop(); };
}

function view(o) {
  const kafka = o.kafka;
  const deadLetters = kafka.dead_letter.reduce((sum, d) => sum + d.messages, 0);
  const totalLag = kafka.lag.reduce((sum, l) => sum + (l.lag ?? 0), 0); // unknown groups aside
  const health = o.vehicles.by_health;
  const tiles = [
    tile("Vehicles", o.vehicles.total, null, "vehicles-total"),
    tile("OK", health.ok, "ok", "health-ok"),
    tile("Need attention", health.attention, health.attention ? "attention" : null, "health-attention"),
    tile("Critical", health.critical, health.critical ? "critical" : null, "health-critical"),
    tile(`Open alarms (${fmtNum(o.alarms.critical)} critical)`, o.alarms.open,
      o.alarms.critical ? "critical" : o.alarms.open ? "attention" : null, "open-alarms"),
    tile("Alerting predictions", o.predictions.alerting, o.predictions.alerting ? "attention" : null,
      "alerting-predictions"),
    tile("Open DTCs", o.open_dtcs, o.open_dtcs ? "attention" : null, "open-dtcs"),
    tile("Dead-letter messages", kafka.available ? deadLetters : "–", deadLetters ? "bad" : null, "dead-letter"),
    tile("Consumer lag", kafka.available ? totalLag : "–", null, "consumer-lag"),
  ];
  return [
    kafka.available ? null : h("div", { class: "alert alert-warning", role: "alert", "data-test": "kafka-unavailable" },
      `Kafka is unavailable: ${kafka.error || "no answer"}. Dead-letter and lag figures are missing.`),
    h("div", { class: "stats stats-overview" }, tiles),
    h("div", { class: "grid-2" },
      section(`Vehicles needing attention (${fmtNum(health.attention + health.critical)})`, attentionTable(o.vehicles.needing_attention)),
      section("Unfinished campaigns", campaignsTable(o.campaigns))),
    h("div", { class: "grid-2" },
      section(`Recent open alarms (${fmtNum(o.alarms.open)})`, alarmsTable(o.alarms.recent)),
      section(`Recent alerting predictions (${fmtNum(o.predictions.alerting)})`, predictionsTable(o.predictions.recent))),
    section("Kafka", kafkaView(kafka)),
  ];
}

function tile(label, value, kind, test) {
  const el = stat(label, typeof value === "number" ? fmtNum(value) : value, kind);
  el.dataset.test = test;
  return el;
}

function vinLink(vin) {
  return h("a", { href: `#/vehicles/${vin}`, class: "mono" }, vin);
}

function attentionTable(rows) {
  return table([
    { label: "VIN", value: (v) => vinLink(v.vin) },
    { label: "Model", value: (v) => v.model },
    { label: "Status", value: (v) => badge(v.status) },
    { label: "Alarms", class: "num", value: (v) => v.critical_alarms ? `${v.open_alarms} (${v.critical_alarms} crit.)` : fmtNum(v.open_alarms) },
    { label: "DTCs", class: "num", value: (v) => fmtNum(v.open_dtcs) },
    { label: "Predictions", class: "num", value: (v) => fmtNum(v.alerting_predictions) },
  ], rows, { emptyText: "Every vehicle is fine.", rowAttrs: (v) => ({ "data-vin": v.vin }) });
}

function campaignsTable(campaigns) {
  return table([
    { label: "Campaign", value: (c) => link(`#/ota/campaigns/${c.id}`, c.name) },
    { label: "State", value: (c) => badge(c.state) },
    { label: "Wave", value: (c) => `${c.current_wave + 1} / ${c.waves}` },
    {
      label: "Progress",
      value: (c) => [
        progressBar([
          { value: c.succeeded, kind: "succeeded", label: "succeeded" },
          { value: c.failed, kind: "failed", label: "failed" },
          { value: c.in_progress, kind: "in_progress", label: "in progress" },
        ], c.targeted, {
          label: c.targeted
            ? `${c.succeeded} succeeded · ${c.failed} failed · ${c.in_progress} in progress of ${c.targeted}`
            : "not launched yet",
        }),
        c.pause_reason ? pauseReason(c) : null,
      ],
    },
  ], campaigns, { emptyText: "No campaign under way.", rowAttrs: (c) => ({ "data-campaign": c.id }) });
}

function pauseReason(c) {
  const reason = c.pause_reason;
  return h("div", { class: "pause-reason", "data-test": "pause-reason", dataset: { code: reason.code } },
    h("span", { class: "error" }, pauseHeadline(reason, c.current_wave, c.waves), pauseReasonText(reason)));
}

function alarmsTable(alarms) {
  return table([
    { label: "Raised", class: "nowrap", value: (a) => fmtTime(a.raised_at) },
    { label: "VIN", value: (a) => vinLink(a.vin) },
    { label: "Severity", value: (a) => badge(a.severity) },
    { label: "Alarm", value: (a) => [h("div", {}, a.message || a.rule_id), h("div", { class: "muted mono" }, a.rule_id, a.late ? " · late data" : "")] },
  ], alarms, { emptyText: "No open alarm." });
}

function predictionsTable(predictions) {
  return table([
    { label: "VIN", value: (p) => [vinLink(p.vin), h("div", { class: "muted" }, `scored ${fmtTime(p.scored_at)}`)] },
    { label: "Component", value: (p) => p.component },
    { label: "Risk", class: "num nowrap", value: (p) => `${fmtPct(p.probability, 0)} in ${p.horizon_days} d` },
    { label: "Why", value: (p) => reasonsList(p.reasons) },
  ], predictions, { emptyText: "No alerting prediction." });
}

function reasonsList(reasons) {
  if (!reasons || reasons.length === 0) return h("span", { class: "muted" }, "–");
  return h("ul", { class: "reasons" }, reasons.map((r) => h("li", {}, r.text || r.feature)));
}

function kafkaView(kafka) {
  const measured = h("p", { class: "muted" }, `Measured ${fmtTime(kafka.measured_at)}`);
  if (!kafka.available) return [h("p", { class: "muted" }, "Not measured: Kafka could not be reached."), measured];
  const groups = new Map();
  for (const l of kafka.lag) {
    const g = groups.get(l.group) || { group: l.group, lag: 0, topics: [], error: null };
    if (l.lag === null) g.error = l.error || "offsets not readable";
    else g.lag += l.lag;
    g.topics.push(l);
    groups.set(l.group, g);
  }
  return h("div", { class: "grid-2" },
    h("div", {},
      h("h3", {}, "Consumer lag per group"),
      table([
        { label: "Group", value: (g) => h("span", { class: "mono" }, g.group) },
        { label: "Topics", value: (g) => g.topics.map((t) => h("div", { class: "mono muted" }, `${t.topic}: ${t.lag === null ? "unknown" : fmtNum(t.lag)}`)) },
        { label: "Lag", class: "num", value: (g) => (g.error ? h("span", { class: "error", title: g.error }, "unknown") : fmtNum(g.lag)) },
      ], [...groups.values()], { emptyText: "No worker group.", rowAttrs: (g) => ({ "data-group": g.group }) }),
      measured),
    h("div", {},
      h("h3", {}, "Dead-letter topics"),
      table([
        { label: "Topic", value: (d) => h("span", { class: "mono" }, d.topic) },
        { label: "Messages", class: "num", value: (d) => d.messages ? h("strong", { class: "error" }, fmtNum(d.messages)) : "0" },
      ], kafka.dead_letter, { emptyText: "No dead-letter topic." })));
}
