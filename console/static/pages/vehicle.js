// One vehicle (#/vehicles/<VIN>): registry data, signal charts and track from the archive,
// health (DTCs, alarms, predictions), bookings, ECU software, battery and driving score.
// Every section loads on its own: one that fails or has no data yet never hides the others.

import { api } from "../api.js";
import {
  badge, clear, empty, fmtNum, fmtPct, fmtTime, h, kv, lineChart, progressBar, section, table,
  trackMap, unavailable,
} from "../ui.js";

const SPEED = "Vehicle.Speed";
const SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current";
const TEMPERATURES = [
  ["Vehicle.Powertrain.TractionBattery.Temperature.Min", "battery cell min"],
  ["Vehicle.Powertrain.TractionBattery.Temperature.Max", "battery cell max"],
  ["Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature", "engine coolant"],
  ["Vehicle.Exterior.AirTemperature", "outside air"],
];
const CHART_GROUPS = [
  { id: "speed", title: "Speed", signals: [[SPEED, "speed"]] },
  { id: "soc", title: "State of charge", signals: [[SOC, "state of charge"]] },
  { id: "temperatures", title: "Temperatures", signals: TEMPERATURES },
];
const WINDOWS = [[15, "15 min"], [60, "1 h"], [360, "6 h"], [1440, "24 h"]];
let windowMinutes = 60; // remembered across vehicles while the console is open

export async function render(root, { vin }) {
  const status = h("span", { id: "health-status" });
  const subtitle = h("span", { class: "muted", id: "vehicle-subtitle" });
  root.append(h("div", { class: "page-header" },
    h("h1", { class: "vin-title" }, vin), status, subtitle, h("span", { class: "spacer" }),
    h("a", { href: "#/vehicles" }, "← all vehicles")));

  const box = (id) => h("div", { id });
  const parts = {
    registry: box("vehicle-registry"), signals: box("vehicle-signals"), track: box("vehicle-track"),
    dtcs: box("vehicle-dtcs"), alarms: box("vehicle-alarms"), predictions: box("vehicle-predictions"),
    bookings: box("vehicle-bookings"), ecus: box("vehicle-ecus"), battery: box("vehicle-battery"),
    ubi: box("vehicle-ubi"),
  };
  const picker = windowPicker(() => loadSignals());
  root.append(
    section("Vehicle", parts.registry),
    h("div", { class: "grid-2" },
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "Signals"), h("span", { class: "spacer" }), picker),
        parts.signals),
      section("Last positions", parts.track)),
    section("Open DTCs", parts.dtcs),
    h("div", { class: "grid-2" }, section("Alarms", parts.alarms), section("Predictions", parts.predictions)),
    h("div", { class: "grid-2" }, section("Service bookings", parts.bookings), section("Software per ECU", parts.ecus)),
    h("div", { class: "grid-2" }, section("Battery health", parts.battery), section("Driving score (UBI)", parts.ubi)),
  );
  for (const el of Object.values(parts)) el.append(h("p", { class: "muted" }, "Loading…"));

  let signalsSeq = 0;
  async function loadSignals() {
    const seq = ++signalsSeq;
    const signals = CHART_GROUPS.flatMap((g) => g.signals.map(([name]) => name));
    try {
      const history = await api.get(`/v1/vehicles/${vin}/signals`, { signal: signals, minutes: windowMinutes, max_points: 300 });
      if (seq !== signalsSeq) return;
      showSignals(parts.signals, parts.track, history);
    } catch (err) {
      if (seq !== signalsSeq) return;
      clear(parts.signals).append(unavailable(err, { notFound: "No data yet." }));
      clear(parts.track).append(unavailable(err, { notFound: "No data yet." }));
    }
  }

  await Promise.all([
    load(`/v1/vehicles/${vin}`, (v) => {
      subtitle.textContent = `${v.model} · ${v.model_year} · ${v.region}`;
      clear(parts.registry).append(registry(v));
      clear(parts.ecus).append(ecuTable(v.ecus));
    }, [parts.registry, parts.ecus], `No vehicle with VIN ${vin} in the registry.`),
    load(`/v1/vehicles/${vin}/health`, (health) => {
      clear(status).append(badge(health.status));
      status.dataset.status = health.status;
      clear(parts.dtcs).append(dtcTable(health.open_dtcs));
      fill(parts.alarms, alarmsView(health));
      clear(parts.predictions).append(predictionsTable(health.predictions));
    }, [parts.dtcs, parts.alarms, parts.predictions]),
    loadSignals(),
    load("/v1/bookings", (bookings) => clear(parts.bookings).append(bookingsTable(bookings)),
      [parts.bookings], "No data yet.", { vin, limit: 50 }),
    load(`/v1/vehicles/${vin}/battery`, (battery) => fill(parts.battery, batteryView(battery)),
      [parts.battery], "No data yet: no charge session seen."),
    load(`/v1/vehicles/${vin}/ubi-score`, (score) => fill(parts.ubi, ubiView(score)),
      [parts.ubi], "No data yet: no completed trip."),
  ]);
}

// Replaces what el shows with content (a node or an array of nodes, nulls skipped).
function fill(el, content) {
  clear(el).append(h("div", {}, content));
}

// GET path and show it; on failure every target box gets the note (role, no data) or the error.
async function load(path, show, targets, notFound = "No data yet.", params) {
  let data;
  try {
    data = await api.get(path, params);
  } catch (err) {
    for (const target of targets) clear(target).append(unavailable(err, { notFound }));
    return;
  }
  show(data);
}

function registry(v) {
  return kv({
    Model: v.model,
    "Model year": String(v.model_year),
    Region: v.region,
    "Time zone": v.time_zone,
    Powertrain: v.powertrain.toUpperCase(),
    Tags: v.tags.length ? v.tags.join(", ") : "–",
    Registered: fmtTime(v.created_at),
  });
}

// --- signals and track ---------------------------------------------------------------------------

function windowPicker(onChange) {
  const buttons = WINDOWS.map(([minutes, label]) => {
    const active = minutes === windowMinutes;
    const b = h("button", { type: "button", "data-minutes": minutes, class: active ? "active" : null,
      "aria-pressed": String(active) }, label);
    b.addEventListener("click", () => {
      windowMinutes = minutes;
      for (const other of buttons) {
        other.classList.toggle("active", other === b);
        other.setAttribute("aria-pressed", String(other === b));
      }
      onChange();
    });
    return b;
  });
  return h("div", { class: "window-picker", id: "signal-window", role: "group", "aria-label": "time window" }, buttons);
}

function showSignals(chartsBox, trackBox, history) {
  clear(chartsBox);
  clear(trackBox);
  if (!history.to) {
    chartsBox.append(h("p", { class: "muted note", "data-test": "no-data" }, "No data yet: nothing archived for this vehicle."));
    trackBox.append(h("p", { class: "muted note", "data-test": "no-data" }, "No data yet: no archived position."));
    return;
  }
  chartsBox.append(h("p", { class: "muted", id: "signal-range" },
    `${fmtTime(history.from)} – ${fmtTime(history.to)} · ${fmtNum(history.rows)} samples`));
  for (const group of CHART_GROUPS) {
    const series = group.signals
      .map(([name, label]) => ({ name: label, unit: history.signals[name]?.unit, points: history.signals[name]?.points || [] }))
      .filter((sr) => sr.points.length > 0);
    const holder = h("div", { class: "chart-group", "data-chart": group.id });
    if (series.length === 0) {
      holder.append(h("figure", { class: "chart-box" }, h("figcaption", {}, group.title),
        h("p", { class: "muted note" }, "No data in this window.")));
    } else {
      holder.append(lineChart(series, { title: group.title, height: 150 }));
    }
    chartsBox.append(holder);
  }
  trackBox.append(history.track.length
    ? trackMap(history.track)
    : h("p", { class: "muted note" }, "No position in this window."));
}

// --- health --------------------------------------------------------------------------------------

function dtcTable(dtcs) {
  return table([
    { label: "Code", value: (d) => h("strong", { class: "mono" }, d.code) },
    { label: "Description", value: (d) => d.description || h("span", { class: "muted" }, "unknown code") },
    { label: "State", value: (d) => badge(d.state, d.state === "confirmed" ? "critical" : "pending") },
    { label: "First seen", class: "nowrap", value: (d) => fmtTime(d.first_seen) },
    { label: "Last seen", class: "nowrap", value: (d) => fmtTime(d.last_seen) },
    { label: "Occurrences", class: "num", value: (d) => fmtNum(d.occurrences) },
  ], dtcs, { emptyText: "No open DTC.", rowAttrs: (d) => ({ "data-code": d.code }) });
}

function alarmsView(health) {
  const columns = [
    { label: "Raised", class: "nowrap", value: (a) => fmtTime(a.raised_at) },
    { label: "Severity", value: (a) => badge(a.severity) },
    { label: "Alarm", value: (a) => [h("div", {}, a.message || a.rule_id), h("div", { class: "muted mono" }, a.rule_id, a.late ? " · late data" : "")] },
  ];
  return [
    h("h3", {}, `Open (${health.open_alarms.length})`),
    table(columns, health.open_alarms, { emptyText: "No open alarm.", rowAttrs: (a) => ({ "data-rule": a.rule_id }) }),
    h("h3", {}, "Cleared in the last 7 days"),
    table([...columns, { label: "Cleared", class: "nowrap", value: (a) => fmtTime(a.cleared_at) }],
      health.recent_alarms, { emptyText: "None." }),
  ];
}

function predictionsTable(predictions) {
  return table([
    { label: "Component", value: (p) => [h("div", {}, p.component), h("div", { class: "muted" }, p.model_version)] },
    { label: "Probability", class: "num", value: (p) => fmtPct(p.probability, 0) },
    { label: "Horizon", class: "num", value: (p) => `${p.horizon_days} d` },
    { label: "Alert", value: (p) => p.alerting ? badge("alerting", "critical") : badge("no", "ok") },
    { label: "Reasons", value: (p) => p.reasons.length
      ? h("ul", { class: "reasons" }, p.reasons.map((r) => h("li", {}, r.text || r.feature)))
      : h("span", { class: "muted" }, "–") },
  ], predictions, { emptyText: "No prediction yet.", rowAttrs: (p) => ({ "data-component": p.component }) });
}

// --- service and software ------------------------------------------------------------------------

function bookingsTable(bookings) {
  return table([
    { label: "Issue", value: (b) => [h("div", {}, b.issue), h("div", { class: "muted mono" }, b.issue_key)] },
    { label: "State", value: (b) => [badge(b.state), " ", badge(b.urgency)] },
    { label: "Center", value: (b) => b.center_code || h("span", { class: "muted" }, "–") },
    { label: "Slot", value: (b) => b.slot_local || h("span", { class: "muted" }, "–") },
    { label: "Created", class: "nowrap", value: (b) => fmtTime(b.created_at).slice(0, 16) },
  ], bookings, { emptyText: "No booking for this vehicle.", rowAttrs: (b) => ({ "data-booking": b.id }) });
}

function ecuTable(ecus) {
  return table([
    { label: "ECU", value: (e) => h("span", { class: "mono" }, e.ecu_id) },
    { label: "Hardware", value: (e) => h("span", { class: "mono" }, e.hardware_id) },
    { label: "Software version", value: (e) => h("strong", { class: "mono" }, e.software_version) },
  ], ecus, { emptyText: "No ECU registered.", rowAttrs: (e) => ({ "data-ecu": e.ecu_id }) });
}

// --- battery and UBI -----------------------------------------------------------------------------

function batteryView({ health, residual, computed_at: computedAt, sessions }) {
  const soh = health.soh_pct;
  const trend = sessions
    .filter((s) => !s.rejected && s.soh_energy_pct !== null && s.soh_energy_pct !== undefined)
    .map((s) => [s.start_ms, s.soh_energy_pct])
    .sort((a, b) => a[0] - b[0]);
  return [
    h("div", { "data-test": "soh" },
      h("span", { class: "headline" }, soh === null ? "–" : `${soh.toFixed(1)} %`),
      h("span", { class: "muted" }, soh === null ? "state of health not known yet"
        : `state of health, 95 % interval ${fmtNum(health.soh_low_pct)}–${fmtNum(health.soh_high_pct)} %`)),
    kv({
      "Residual grade": badge(residual.second_life_grade, "grade"),
      "Residual value": residual.residual_value_adjustment_pct === null ? "–"
        : `${residual.residual_value_adjustment_pct > 0 ? "+" : ""}${fmtNum(residual.residual_value_adjustment_pct)} % vs. expected (${fmtNum(residual.expected_soh_pct)} % SoH)`,
      "Warranty headroom": residual.warranty_headroom_pts === null ? "–" : `${fmtNum(residual.warranty_headroom_pts)} points`,
      Fade: health.fade_pct_per_year === null ? "–" : `${fmtNum(health.fade_pct_per_year, 2)} %/year (${health.fade_method})`,
      "80 % expected": health.date_80 ? fmtTime(health.date_80).slice(0, 10) : "–",
      Sessions: `${health.sessions_used} used of ${health.sessions_detected} detected`,
      "Equivalent full cycles": fmtNum(residual.equivalent_full_cycles),
      "DC fast-charge share": fmtPct(residual.dc_fast_charge_share, 0),
      Flags: residual.quality_flags.length ? residual.quality_flags.join(", ") : "–",
      Computed: fmtTime(computedAt),
    }),
    h("h3", {}, "State of health per charge session"),
    h("div", { "data-chart": "soh" }, trend.length
      ? lineChart([{ name: "SoH of the session", unit: "%", points: trend }], { height: 150 })
      : empty("No accepted charge session yet.")),
  ];
}

const SUB_SCORE_LABELS = {
  braking: "Braking", acceleration: "Acceleration", cornering: "Cornering", speeding: "Speeding",
  night: "Night driving",
};

function ubiView(score) {
  const subs = Object.entries(score.sub_scores || {});
  return [
    h("div", { "data-test": "ubi-score" },
      h("span", { class: "headline" }, fmtNum(score.score, 0)),
      h("span", { class: "muted" }, `of 100, interval ${fmtNum(score.score_low, 0)}–${fmtNum(score.score_high, 0)}`),
      score.data_sufficient ? null : [" ", badge("insufficient data", "warning")]),
    kv({
      Period: `${fmtTime(score.period_start).slice(0, 10)} – ${fmtTime(score.period_end).slice(0, 10)}`,
      Exposure: `${fmtNum(score.distance_km)} km · ${fmtNum(score.hours)} h · ${fmtNum(score.trips)} trips`,
      Confidence: fmtPct(score.confidence, 0),
      "Disputed trips": fmtNum(score.disputed_trips ?? 0),
      Version: score.score_version,
    }),
    score.insufficient_reasons && score.insufficient_reasons.length
      ? h("p", { class: "muted" }, `Not enough data: ${score.insufficient_reasons.join(", ")}`) : null,
    h("h3", {}, "Sub-scores"),
    table([
      { label: "Behaviour", value: ([k]) => SUB_SCORE_LABELS[k] || k },
      { label: "Score", class: "num", value: ([, v]) => fmtNum(v, 0) },
      { label: "", class: "bar-cell", value: ([, v]) => v === null ? "" : progressBar([{ value: v, kind: v < 50 ? "score-low" : v < 80 ? "score-mid" : "score", label: "score" }], 100) },
    ], subs, { emptyText: "No sub-scores (no distance driven).", rowAttrs: ([k]) => ({ "data-sub-score": k }) }),
    h("h3", {}, "Reasons"),
    score.reasons.length
      ? h("ul", { class: "reasons", id: "ubi-reasons" }, score.reasons.map((r) =>
        h("li", {}, h("strong", { class: "mono" }, r.code), ` −${fmtNum(r.points_lost)} points: ${r.text}`)))
      : empty("Nothing cost points."),
    h("p", { class: "muted" }, `Computed ${fmtTime(score.computed_at)}`),
  ];
}
