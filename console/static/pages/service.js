// Proactive service (#/service): service centers, bookings per center and state, and the
// webhook delivery log with replay. A service center sees only its own bookings and deliveries
// (the API restricts them); the center list and replay are for operators.

import { api } from "../api.js";
import {
  actionButton, badge, clear, empty, fmtNum, fmtTime, h, latestOnly, section, select, stat, table, toast,
  unavailable,
} from "../ui.js";

const BOOKING_STATES = ["unassigned", "proposed", "accepted", "completed", "declined", "cancelled"];
const DELIVERY_STATES = ["pending", "delivered", "dead", "no_endpoint"];
const COUNT_LIMIT = 1000;

export async function render(root, _params, ctx) {
  const operator = ctx.session.principal.role !== "service_center";
  const filters = { center: "", bookingState: "", deliveryState: "" };
  let centers = new Map(); // id -> {id, code, name}

  const parts = {
    centers: h("div", { id: "service-centers" }),
    counts: h("div", { id: "booking-counts", class: "center-counts" }),
    bookings: h("div", { id: "bookings" }),
    events: h("div", { id: "webhook-events" }),
  };
  const bookingCenter = h("select", { id: "booking-center" });
  const bookingState = select([["", "any state"], ...BOOKING_STATES.map((s) => [s, s])], "", { id: "booking-state" });
  const eventCenter = h("select", { id: "event-center" });
  const eventState = select([["", "any delivery state"], ...DELIVERY_STATES.map((s) => [s, s.replace("_", " ")])], "", { id: "event-state" });
  bookingCenter.addEventListener("change", () => { filters.center = bookingCenter.value; eventCenter.value = filters.center; loadBookings(); loadEvents(); });
  eventCenter.addEventListener("change", () => { filters.center = eventCenter.value; bookingCenter.value = filters.center; loadBookings(); loadEvents(); });
  bookingState.addEventListener("change", () => { filters.bookingState = bookingState.value; loadBookings(); });
  eventState.addEventListener("change", () => { filters.deliveryState = eventState.value; loadEvents(); });

  const refresh = actionButton("Refresh", () => loadAll(), { kind: "secondary", id: "service-refresh" });
  root.append(
    h("div", { class: "page-header" }, h("h1", {}, "Service"), h("span", { class: "spacer" }), refresh),
    section("Service centers", parts.centers),
    section("Bookings per center", parts.counts),
    section("Bookings",
      h("div", { class: "filters" }, h("label", { for: "booking-center" }, "Center"), bookingCenter,
        h("label", { for: "booking-state" }, "State"), bookingState),
      parts.bookings),
    section("Webhook deliveries",
      h("div", { class: "filters" }, h("label", { for: "event-center" }, "Center"), eventCenter,
        h("label", { for: "event-state" }, "Delivery"), eventState),
      parts.events),
  );

  function centerName(id, code) {
    const c = centers.get(id);
    return c ? c.code : code || (id ? id.slice(0, 8) : "–");
  }

  function fillCenterSelects() {
    const options = [["", operator ? "all centers" : "my center"],
      ...[...centers.values()].sort((a, b) => a.code.localeCompare(b.code)).map((c) => [c.id, c.name ? `${c.code} – ${c.name}` : c.code])];
    for (const el of [bookingCenter, eventCenter]) clear(el).append(...select(options, filters.center).children);
  }

  // Operators see every center; a service center its own (the API answers a list of one).
  async function loadCenters() {
    centers = new Map();
    try {
      const list = await api.get("/v1/service-centers", { limit: 1000 });
      for (const c of list) centers.set(c.id, c);
      // Active centers first: the ones bookings can go to now.
      list.sort((a, b) => Number(b.active) - Number(a.active) || a.code.localeCompare(b.code));
      clear(parts.centers).append(centersTable(list));
    } catch (err) {
      clear(parts.centers).append(unavailable(err));
    }
  }

  function showCounts(all) {
    const perCenter = new Map();
    for (const b of all) {
      const key = b.center_id || "";
      if (key && !centers.has(key)) centers.set(key, { id: key, code: b.center_code || key.slice(0, 8), name: "" });
      const counts = perCenter.get(key) || Object.fromEntries(BOOKING_STATES.map((s) => [s, 0]));
      counts[b.state] = (counts[b.state] || 0) + 1;
      perCenter.set(key, counts);
    }
    clear(parts.counts);
    if (perCenter.size === 0) {
      parts.counts.append(h("p", { class: "empty" }, "No bookings yet."));
      return;
    }
    const keys = [...perCenter.keys()].sort((a, b) => centerName(a).localeCompare(centerName(b)));
    for (const key of keys) {
      const counts = perCenter.get(key);
      const total = Object.values(counts).reduce((x, y) => x + y, 0);
      const c = centers.get(key);
      parts.counts.append(h("div", { class: "center-count", "data-center": c ? c.code : "unassigned" },
        h("h3", {}, key ? `${centerName(key)}${c && c.name ? ` – ${c.name}` : ""}` : "Not assigned to a center",
          h("span", { class: "muted" }, ` · ${fmtNum(total)} booking${total === 1 ? "" : "s"}`)),
        h("div", { class: "stats stats-compact" }, BOOKING_STATES.filter((s) => counts[s] || ["proposed", "accepted"].includes(s)).map((s) => {
          const tile = stat(s, fmtNum(counts[s]), counts[s] && ["declined", "cancelled"].includes(s) ? "bad" : null);
          tile.dataset.test = `count-${s}`;
          return tile;
        }))));
    }
    if (all.length >= COUNT_LIMIT) parts.counts.append(h("p", { class: "muted" }, `Counts of the newest ${COUNT_LIMIT} bookings.`));
  }

  const bookingsTurn = latestOnly();
  async function loadBookings() {
    const current = bookingsTurn();
    let view;
    try {
      const rows = await api.get("/v1/bookings", { center_id: filters.center, state: filters.bookingState, limit: 200 });
      view = bookingsTable(rows, operator, centerName);
    } catch (err) {
      view = unavailable(err);
    }
    if (current()) clear(parts.bookings).append(view);
  }

  const eventsTurn = latestOnly();
  async function loadEvents() {
    const current = eventsTurn();
    let view;
    try {
      const rows = await api.get("/v1/webhook-events", { center_id: filters.center, state: filters.deliveryState, limit: 100 });
      view = eventsTable(rows, operator, centerName, loadEvents);
    } catch (err) {
      view = unavailable(err);
    }
    if (current()) clear(parts.events).append(view);
  }

  async function loadAll() {
    let all = null;
    try {
      all = await api.get("/v1/bookings", { limit: COUNT_LIMIT });
    } catch (err) {
      clear(parts.counts).append(unavailable(err));
    }
    await loadCenters();
    if (all) showCounts(all);
    fillCenterSelects();
    await Promise.all([loadBookings(), loadEvents()]);
  }

  await loadAll();
}

function centersTable(list) {
  return table([
    { label: "Code", value: (c) => h("span", { class: "mono" }, c.code) },
    { label: "Name", value: (c) => c.name },
    { label: "Capabilities", value: (c) => c.capabilities.join(", ") },
    { label: "Capacity", value: (c) => `${c.bays} bays × ${c.slot_minutes} min` },
    { label: "Time zone", value: (c) => c.time_zone },
    { label: "Webhook", value: (c) => c.webhook_url ? h("span", { class: "mono" }, c.webhook_url) : h("span", { class: "muted" }, "none") },
    { label: "Active", value: (c) => c.active ? badge("active") : badge("inactive", "cancelled") },
  ], list, { emptyText: "No service center registered.", rowAttrs: (c) => ({ "data-center": c.code }) });
}

function bookingsTable(rows, operator, centerName) {
  return table([
    { label: "Created", class: "nowrap", value: (b) => fmtTime(b.created_at) },
    { label: "VIN", value: (b) => operator ? h("a", { href: `#/vehicles/${b.vin}`, class: "mono" }, b.vin) : h("span", { class: "mono" }, b.vin) },
    { label: "Issue", value: (b) => [h("div", {}, b.issue), b.escalations ? h("div", { class: "muted" }, `escalated ${b.escalations}×`) : null] },
    { label: "Urgency", value: (b) => badge(b.urgency) },
    { label: "State", value: (b) => badge(b.state) },
    { label: "Center", value: (b) => b.center_id ? centerName(b.center_id, b.center_code) : h("span", { class: "muted" }, "–") },
    { label: "Slot", value: (b) => b.slot_local ? [b.slot_local, b.after_due ? h("div", { class: "error" }, "after due date") : null] : h("span", { class: "muted" }, "–") },
    { label: "Due by", class: "nowrap", value: (b) => fmtTime(b.due_by) },
  ], rows, { emptyText: "No booking matches.", rowAttrs: (b) => ({ "data-booking": b.id, "data-vin": b.vin }) });
}

function eventsTable(rows, operator, centerName, reload) {
  const columns = [
    { label: "Created", class: "nowrap", value: (e) => fmtTime(e.created_at) },
    { label: "Type", value: (e) => h("span", { class: "mono" }, e.type) },
    { label: "Center", value: (e) => centerName(e.center_id) },
    { label: "State", value: (e) => h("span", { "data-test": "delivery-state" }, badge(e.delivery_state)) },
    { label: "Attempts", class: "num", value: (e) => h("span", { "data-test": "attempts" }, String(e.attempts)) },
    { label: "Last error", value: (e) => e.last_error ? h("span", { class: "error mono" }, e.last_error) : h("span", { class: "muted" }, "–") },
    { label: "Delivered", class: "nowrap", value: (e) => fmtTime(e.delivered_at) },
    { label: "Next attempt", class: "nowrap", value: (e) => e.delivery_state === "pending" ? fmtTime(e.next_attempt_at) : "–" },
  ];
  if (operator) {
    columns.push({ label: "", value: (e) => actionButton("Replay", async () => {
      const replayed = await api.post(`/v1/webhook-events/${e.id}/replay`);
      toast(`Replayed ${e.type}: now ${replayed.delivery_state.replace("_", " ")}, ${replayed.attempts} attempts`, "ok");
      await reload();
    }, { kind: "secondary", id: `replay-${e.id}` }) });
  }
  return table(columns, rows, { emptyText: "No webhook event matches.", rowAttrs: (e) => ({ "data-event": e.id }) });
}
