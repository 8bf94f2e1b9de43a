// The audit log (#/audit, admins): events newest first, filtered by action and subject, paged
// to older events with before_seq, and a check of the hash chain.

import { api } from "../api.js";
import {
  actionButton, clear, compactJson, fmtTime, h, latestOnly, section, table, unavailable,
} from "../ui.js";

const PAGE_SIZE = 50;

export async function render(root) {
  const filters = { action: "", subject: "" };
  const pages = []; // before_seq of each page shown so far (undefined: the newest)

  const action = h("input", { id: "audit-action", "aria-label": "action", placeholder: "action (exact), e.g. campaign.launch", size: 30 });
  const subject = h("input", { id: "audit-subject", "aria-label": "subject", placeholder: "subject (exact), e.g. vehicle:<VIN>", size: 32 });
  const form = h("form", { class: "filters", id: "audit-filters" }, action, subject,
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("button", { type: "button", class: "secondary", onclick: () => { action.value = ""; subject.value = ""; apply(); } }, "Clear"));
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });

  const events = h("div", { id: "audit-events" });
  const newer = h("button", { type: "button", class: "secondary", id: "audit-newer" }, "← Newer");
  const older = h("button", { type: "button", class: "secondary", id: "audit-older" }, "Older →");
  const position = h("span", { class: "muted", id: "audit-position" });
  const paging = h("div", { class: "actions" }, newer, older, position);
  const verdict = h("div", { id: "audit-verify-result" });
  const verify = actionButton("Verify chain", async () => {
    const check = await api.get("/v1/audit/verify").catch((err) => err);
    clear(verdict).append(chainAlert(check));
  }, { kind: "secondary", id: "audit-verify" });

  root.append(
    h("div", { class: "page-header" }, h("h1", {}, "Audit log"), h("span", { class: "spacer" }), verify),
    verdict,
    section("Events", form, events, paging),
  );

  let shown = [];
  newer.addEventListener("click", () => { pages.pop(); load(); });
  older.addEventListener("click", () => {
    pages.push(shown[shown.length - 1].seq);
    load();
  });

  function apply() {
    filters.action = action.value.trim();
    filters.subject = subject.value.trim();
    pages.length = 0;
    load();
  }

  const turn = latestOnly();
  async function load() {
    const current = turn();
    newer.disabled = true;
    older.disabled = true;
    const beforeSeq = pages[pages.length - 1];
    let rows;
    try {
      rows = await api.get("/v1/audit", { action: filters.action, subject: filters.subject,
        before_seq: beforeSeq, limit: PAGE_SIZE });
    } catch (err) {
      if (!current()) return;
      clear(events).append(unavailable(err));
      position.textContent = "";
      if (err.status === 403) {
        for (const el of [verify, form, paging]) el.hidden = true;
      }
      return;
    }
    if (!current()) return;
    shown = rows;
    clear(events).append(table([
      { label: "Seq", class: "num", value: (e) => String(e.seq) },
      { label: "Time", class: "nowrap", value: (e) => fmtTime(e.at) },
      { label: "Actor", value: (e) => e.actor },
      { label: "Action", value: (e) => h("span", { class: "mono" }, e.action) },
      { label: "Subject", value: (e) => h("span", { class: "mono" }, e.subject) },
      { label: "Details", value: (e) => Object.keys(e.details).length ? compactJson(e.details) : h("span", { class: "muted" }, "–") },
    ], shown, { emptyText: beforeSeq ? "No older events." : "No event matches.", rowAttrs: (e) => ({ "data-seq": e.seq }) }));
    position.textContent = shown.length ? `seq ${shown[0].seq} – ${shown[shown.length - 1].seq}` : "";
    newer.disabled = pages.length === 0;
    older.disabled = shown.length < PAGE_SIZE || shown[shown.length - 1].seq <= 1;
  }

  await load();
}

function chainAlert(check) {
  if (check instanceof Error) {
    return check.status === 403 ? unavailable(check) : h("div", { class: "alert alert-error", role: "alert" }, check.message);
  }
  if (check.ok) {
    return h("div", { class: "alert alert-ok", role: "status", "data-test": "chain-ok" },
      `Chain intact: all ${check.events} events verified from the first.`);
  }
  return h("div", { class: "alert alert-error", role: "alert", "data-test": "chain-broken" },
    `Chain broken at seq ${check.first_bad_seq}: ${check.reason || "hash mismatch"} (the ${check.events} events before it verify).`);
}
