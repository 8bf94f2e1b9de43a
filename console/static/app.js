// Console shell: login, navigation and the hash router. Each page module exports
// `render(root, params, ctx)`, which may return a cleanup function (stops its polling).

import { api, ApiError, setSession, whenUnauthorized } from "./api.js";
import { clear, errorBox, h } from "./ui.js";

const ROUTES = [
  { pattern: /^#\/overview$/, page: "overview", module: "./pages/overview.js" },
  { pattern: /^#\/vehicles$/, page: "vehicles", module: "./pages/vehicles.js" },
  { pattern: /^#\/vehicles\/([A-HJ-NPR-Z0-9]{17})$/, page: "vehicles", module: "./pages/vehicle.js", params: ["vin"] },
  { pattern: /^#\/ota$/, page: "ota", module: "./pages/ota.js" },
  { pattern: /^#\/ota\/campaigns\/([0-9a-f-]{36})$/, page: "ota", module: "./pages/campaign.js", params: ["campaignId"] },
  { pattern: /^#\/service$/, page: "service", module: "./pages/service.js" },
  { pattern: /^#\/audit$/, page: "audit", module: "./pages/audit.js" },
];
const HOME = { admin: "#/overview", fleet_operator: "#/overview", service_center: "#/service" };

const ctx = { session: null, api };
let cleanup = null;
let renderSeq = 0;

function showLogin(message) {
  ctx.session = null;
  setSession(null);
  if (cleanup) { cleanup(); cleanup = null; }
  clear(document.getElementById("view"));
  document.querySelector(".topbar").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("login-token").focus();
}

function showShell(session) {
  ctx.session = session;
  setSession(session);
  document.getElementById("login").hidden = true;
  document.querySelector(".topbar").hidden = false;
  const p = session.principal;
  document.getElementById("who").textContent = `${p.name} · ${p.role}`;
}

async function route() {
  if (!ctx.session) return;
  const hash = window.location.hash || HOME[ctx.session.principal.role] || "#/overview";
  const match = ROUTES.map((r) => [r, hash.match(r.pattern)]).find(([, m]) => m);
  const view = document.getElementById("view");
  if (cleanup) { cleanup(); cleanup = null; }
  const seq = ++renderSeq;
  clear(view);
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", Boolean(match) && a.dataset.page === match[0].page);
  }
  if (!match) {
    view.append(errorBox(new Error(`No page at ${hash}`)));
    return;
  }
  const [r, m] = match;
  const params = Object.fromEntries((r.params || []).map((name, i) => [name, decodeURIComponent(m[i + 1])]));
  try {
    const mod = await import(r.module);
    if (seq !== renderSeq) return;
    const root = h("div", { class: `page page-${r.page}` });
    view.append(root);
    const done = await mod.render(root, params, ctx);
    if (seq !== renderSeq) { if (typeof done === "function") done(); return; }
    cleanup = typeof done === "function" ? done : null;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    view.append(errorBox(err));
  }
}

async function logIn(event) {
  event.preventDefault();
  const input = document.getElementById("login-token");
  const button = document.getElementById("login-submit");
  button.disabled = true;
  try {
    const session = await api.post("/v1/session", { token: input.value });
    input.value = "";
    showShell(session);
    if (!window.location.hash) window.location.hash = HOME[session.principal.role] || "#/overview";
    else route();
  } catch (err) {
    document.getElementById("login-error").textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

async function logOut() {
  try { await api.del("/v1/session"); } catch { /* the session may be gone already */ }
  showLogin("Logged out.");
}

async function start() {
  document.getElementById("login-form").addEventListener("submit", logIn);
  document.getElementById("logout").addEventListener("click", logOut);
  window.addEventListener("hashchange", route);
  whenUnauthorized(() => showLogin("Your session has ended; log in again."));
  try {
    showShell(await api.get("/v1/session"));
    route();
  } catch {
    showLogin("");
  }
}

start();
