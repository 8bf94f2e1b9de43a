// Small DOM helpers shared by the pages. Data from the API only ever reaches the page as text
// nodes or attribute values (never innerHTML), so a VIN or an error message cannot inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

// h("div", {class: "card", onclick: fn}, "text", childNode, [more, children])
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyAttrs(el, attrs);
  append(el, children);
  return el;
}

function applyAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// --- formatting ------------------------------------------------------------------------------

export function fmtTime(value) {
  if (!value) return "–";
  const d = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function fmtNum(value, digits = 1) {
  if (value === undefined || value === null || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(digits);
}

export function fmtPct(fraction, digits = 1) {
  if (fraction === undefined || fraction === null) return "–";
  return `${(fraction * 100).toFixed(digits)} %`;
}

// --- building blocks -------------------------------------------------------------------------

// A coloured pill for a state or status ("running", "critical", "delivered"...).
export function badge(text, kind) {
  const value = text ?? "–";
  return h("span", { class: `badge badge-${kind || String(value).toLowerCase()}` }, value);
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

export function kv(pairs) {
  return h("dl", { class: "kv" },
    Object.entries(pairs).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")]));
}

export function empty(text) {
  return h("p", { class: "empty" }, text);
}

// columns: [{label, value: row => node|string, class?}]; rows: array.
export function table(columns, rows, { emptyText = "Nothing here.", rowAttrs } = {}) {
  if (!rows || rows.length === 0) return empty(emptyText);
  return h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.label)))),
    h("tbody", {}, rows.map((row) =>
      h("tr", rowAttrs ? rowAttrs(row) : {},
        columns.map((c) => h("td", { class: c.class }, c.value(row)))))));
}

export function link(href, text) {
  return h("a", { href }, text);
}

export function stat(label, value, kind) {
  return h("div", { class: `stat ${kind ? `stat-${kind}` : ""}` },
    h("div", { class: "stat-value" }, value), h("div", { class: "stat-label" }, label));
}

// A horizontal bar made of segments: [{value, kind, label}] out of total.
export function progressBar(segments, total, { label } = {}) {
  const bar = h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0,
    "aria-valuemax": total, "aria-valuenow": segments.reduce((a, sg) => a + sg.value, 0) });
  for (const seg of segments) {
    if (!seg.value || !total) continue;
    const part = h("div", { class: `progress-seg seg-${seg.kind}`, title: `${seg.label}: ${seg.value}` });
    part.style.width = `${(100 * seg.value) / total}%`;
    bar.append(part);
  }
  return h("div", { class: "progress-wrap" }, bar, label ? h("div", { class: "progress-label" }, label) : null);
}

export function errorBox(err) {
  return h("div", { class: "alert alert-error", role: "alert" }, err && err.message ? err.message : String(err));
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${kind}`, role: "status" }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

// Runs fn now and every ms until the returned stop() is called; errors are shown, not thrown.
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try { await fn(); } catch (err) { console.error(err); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

// Wraps an action button: disables it while running, reports the outcome as a toast.
export function actionButton(text, run, { kind = "primary", confirmText, id } = {}) {
  const button = h("button", { type: "button", class: kind, id });
  button.textContent = text;
  button.addEventListener("click", async () => {
    if (confirmText && !window.confirm(confirmText)) return;
    button.disabled = true;
    try {
      await run();
    } catch (err) {
      toast(err.message || String(err), "error");
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

// --- charts (inline SVG, no library) ---------------------------------------------------------

// series: [{name, points: [[epoch_ms, value], ...], unit}] drawn on one time axis, each
// with its own vertical scale when they have different units.
export function lineChart(series, { width = 640, height = 180, title } = {}) {
  const pad = { l: 48, r: 12, t: 10, b: 22 };
  const all = series.flatMap((sr) => sr.points);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": title || series.map((sr) => sr.name).join(", ") });
  if (all.length === 0) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "chart-empty" }, "no data"));
    return svg;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const x = (t) => pad.l + ((t - t0) / Math.max(1, t1 - t0)) * (width - pad.l - pad.r);
  // Series of the same unit share one vertical scale (three temperatures stay comparable).
  const valuesOf = (sr) => sr.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined);
  const sameUnit = (sr) => series.filter((other) => (other.unit || "") === (sr.unit || "")).flatMap(valuesOf);
  series.forEach((sr, i) => {
    const values = sameUnit(sr);
    if (valuesOf(sr).length === 0) return;
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    if (hi === lo) { hi += 1; lo -= 1; }
    const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (height - pad.t - pad.b);
    const d = sr.points.filter((p) => p[1] !== null && p[1] !== undefined)
      .map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    svg.append(s("path", { d, class: `line line-${i % 6}` }));
    if (i === 0) {
      svg.append(s("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end", class: "axis" }, fmtNum(hi)));
      svg.append(s("text", { x: pad.l - 4, y: height - pad.b, "text-anchor": "end", class: "axis" }, fmtNum(lo)));
    }
  });
  svg.append(s("line", { x1: pad.l, x2: width - pad.r, y1: height - pad.b, y2: height - pad.b, class: "axis-line" }));
  // Time of day within a day; dates when the series span more (a trend over months).
  const tick = (t) => (t1 - t0 > 86_400_000 ? fmtTime(t).slice(0, 10) : fmtTime(t).slice(11, 19));
  svg.append(s("text", { x: pad.l, y: height - 6, class: "axis" }, tick(t0)));
  svg.append(s("text", { x: width - pad.r, y: height - 6, "text-anchor": "end", class: "axis" }, tick(t1)));
  const legend = h("div", { class: "legend" }, series.map((sr, i) =>
    h("span", { class: `legend-item line-${i % 6}` }, `${sr.name}${sr.unit ? ` (${sr.unit})` : ""}`)));
  return h("figure", { class: "chart-box" }, title ? h("figcaption", {}, title) : null, svg, legend);
}

// points: [[epoch_ms, lat, lon], ...] drawn as a polyline on an equirectangular projection
// scaled to the track's bounding box. No map tiles: a grid and the start and end markers.
export function trackMap(points, { width = 420, height = 300 } = {}) {
  const svg = s("svg", { class: "track", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "track" });
  if (!points || points.length === 0) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "chart-empty" }, "no positions"));
    return svg;
  }
  const lats = points.map((p) => p[1]);
  const lons = points.map((p) => p[2]);
  const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.cos((midLat * Math.PI) / 180);
  const xs = lons.map((lon) => lon * k);
  const minX = Math.min(...xs); const maxX = Math.max(...xs);
  const minY = Math.min(...lats); const maxY = Math.max(...lats);
  // At least ~200 m across, so a parked car's GPS jitter stays a small cluster, not a scribble.
  const span = Math.max(maxX - minX, maxY - minY, 0.002);
  const pad = 16;
  const scale = Math.min(width - 2 * pad, height - 2 * pad) / span;
  const px = (i) => pad + (xs[i] - minX) * scale;
  const py = (i) => height - pad - (lats[i] - minY) * scale;
  for (let g = 0; g <= 4; g++) {
    svg.append(s("line", { x1: (g * width) / 4, x2: (g * width) / 4, y1: 0, y2: height, class: "grid-line" }));
    svg.append(s("line", { y1: (g * height) / 4, y2: (g * height) / 4, x1: 0, x2: width, class: "grid-line" }));
  }
  const d = points.map((_, i) => `${i ? "L" : "M"}${px(i).toFixed(1)},${py(i).toFixed(1)}`).join("");
  svg.append(s("path", { d, class: "track-line" }));
  svg.append(s("circle", { cx: px(0), cy: py(0), r: 4, class: "track-start" }));
  const last = points.length - 1;
  svg.append(s("circle", { cx: px(last), cy: py(last), r: 5, class: "track-end" }));
  const kmAcross = (span * 111.2).toFixed(span * 111.2 < 10 ? 2 : 0);
  return h("figure", { class: "chart-box" }, svg,
    h("figcaption", {}, `${points.length} positions, ${kmAcross} km across; last ${lats[last].toFixed(5)}, ${lons[last].toFixed(5)}`));
}

// --- section helpers (overview, vehicle, service and audit pages) ----------------------------

// What a section shows when its request failed: a short note when the role may not see it
// (403) or there is nothing yet (404), else the error itself.
export function unavailable(err, { notFound = "No data yet." } = {}) {
  if (err && err.status === 403) {
    return h("p", { class: "muted note", "data-test": "role-note" }, "Not available for your role.");
  }
  if (err && err.status === 404) return h("p", { class: "muted note", "data-test": "no-data" }, notFound);
  return errorBox(err);
}

// A JSON value on one line, cut to `max` characters (the whole text in the tooltip).
export function compactJson(value, max = 160) {
  const text = JSON.stringify(value ?? null);
  const cut = text.length > max;
  return h("code", { class: "json-inline", title: cut ? text : null }, cut ? `${text.slice(0, max - 1)}…` : text);
}

// A <select> of [value, label] pairs with `value` selected.
export function select(options, value, attrs) {
  return h("select", attrs, options.map(([v, label]) =>
    h("option", { value: v, selected: String(v) === String(value ?? "") }, label)));
}

// For a view that reloads on every filter change: `const turn = latestOnly();` then in each
// load `const current = turn();` and, after awaiting, show the answer only while `current()`
// (a slower, older answer must not overwrite a newer one).
export function latestOnly() {
  let latest = 0;
  return () => {
    const mine = ++latest;
    return () => mine === latest;
  };
}
