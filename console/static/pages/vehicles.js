// The vehicle registry (#/vehicles): filters by model, region and tag, paging, and a VIN search
// that opens the vehicle's page.

import { api } from "../api.js";
import { badge, clear, fmtTime, h, latestOnly, section, select, table, unavailable } from "../ui.js";

const VIN_RE = /^[A-HJ-NPR-Z0-9]{17}$/;
const PAGE_SIZES = [25, 50, 100, 250];
// Kept while the console is open, so coming back from a vehicle shows the same page.
const state = { model: "", region: "", tag: "", limit: 50, offset: 0 };

export async function render(root) {
  const vinInput = h("input", { id: "vin-search", type: "search", "aria-label": "VIN", placeholder: "VIN (17 characters)",
    maxlength: 17, size: 22, autocomplete: "off", spellcheck: "false" });
  const vinError = h("span", { class: "error", id: "vin-search-error", role: "alert" });
  const search = h("form", { class: "filters", id: "vin-search-form" },
    vinInput, h("button", { type: "submit", class: "primary" }, "Open vehicle"), vinError);
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    const vin = vinInput.value.trim().toUpperCase();
    if (!VIN_RE.test(vin)) {
      vinError.textContent = "A VIN has 17 letters and digits (no I, O or Q).";
      return;
    }
    window.location.hash = `#/vehicles/${vin}`;
  });

  const model = h("input", { id: "filter-model", placeholder: "model", "aria-label": "model", value: state.model, size: 14 });
  const region = h("input", { id: "filter-region", placeholder: "region", "aria-label": "region", value: state.region, size: 8 });
  const tag = h("input", { id: "filter-tag", placeholder: "tag", "aria-label": "tag", value: state.tag, size: 12 });
  const limit = select(PAGE_SIZES.map((n) => [n, `${n} per page`]), state.limit, { id: "filter-limit" });
  const filters = h("form", { class: "filters", id: "vehicle-filters" },
    model, region, tag, limit,
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("button", { type: "button", class: "secondary", id: "filter-clear", onclick: () => {
      model.value = ""; region.value = ""; tag.value = "";
      apply();
    } }, "Clear"));
  const apply = () => {
    Object.assign(state, { model: model.value.trim(), region: region.value.trim(), tag: tag.value.trim(),
      limit: Number(limit.value), offset: 0 });
    load();
  };
  filters.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  limit.addEventListener("change", apply);

  const results = h("div", { id: "vehicle-results" });
  const prev = h("button", { type: "button", class: "secondary", id: "page-prev" }, "← Previous");
  const next = h("button", { type: "button", class: "secondary", id: "page-next" }, "Next →");
  const position = h("span", { class: "muted", id: "page-position" });
  prev.addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load(); });
  next.addEventListener("click", () => { state.offset += state.limit; load(); });

  root.append(
    h("div", { class: "page-header" }, h("h1", {}, "Vehicles")),
    section("Find a vehicle", search),
    section("Registry", filters, results, h("div", { class: "actions" }, prev, next, position)),
  );

  const turn = latestOnly();
  async function load() {
    const current = turn();
    prev.disabled = true;
    next.disabled = true;
    let rows;
    try {
      rows = await api.get("/v1/vehicles", { model: state.model, region: state.region, tag: state.tag,
        limit: state.limit, offset: state.offset });
    } catch (err) {
      if (!current()) return;
      clear(results).append(unavailable(err));
      position.textContent = "";
      return;
    }
    if (!current()) return; // a newer request (other filters or page) is under way
    clear(results).append(table([
      { label: "VIN", value: (v) => h("a", { href: `#/vehicles/${v.vin}`, class: "mono" }, v.vin) },
      { label: "Model", value: (v) => v.model },
      { label: "Year", class: "num", value: (v) => String(v.model_year) },
      { label: "Region", value: (v) => v.region },
      { label: "Powertrain", value: (v) => v.powertrain.toUpperCase() },
      { label: "Tags", value: (v) => v.tags.length ? v.tags.map((t) => [badge(t, "tag"), " "]) : h("span", { class: "muted" }, "–") },
      { label: "ECUs", class: "num", value: (v) => String(v.ecus.length) },
      { label: "Registered", class: "nowrap", value: (v) => fmtTime(v.created_at) },
    ], rows, { emptyText: state.offset ? "No more vehicles." : "No vehicle matches these filters.",
      rowAttrs: (v) => ({ "data-vin": v.vin }) }));
    position.textContent = rows.length
      ? `vehicles ${state.offset + 1}–${state.offset + rows.length}` : "";
    prev.disabled = state.offset === 0;
    next.disabled = rows.length < state.limit;
  }

  await load();
}
