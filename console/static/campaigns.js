// How campaigns read in words, on the campaign page and on the overview: wave names and
// pause reasons (an operator's, or the gate's with the figures it saw when it paused).

import { fmtPct } from "./ui.js";

// The gate's count of failed vehicles: `failed_vehicles`, or (as stored before that field
// existed) `failures` when it is a number; null when the reason does not say.
function failedCount(r) {
  if (Number.isFinite(r.failed_vehicles)) return r.failed_vehicles;
  return Number.isFinite(r.failures) ? r.failures : null;
}

const REASONS = {
  operator: (r) => `Paused by ${r.by || "an operator"}${r.note ? `: ${r.note}` : ""}.`,
  failure_rate_above_limit: (r) => {
    const failed = failedCount(r);
    return "Failure rate above the gate's limit: "
      + (failed === null ? "" : `when it paused, ${failed} of ${r.reported} reports had failed; `)
      + `even the lower bound of the failure rate (${fmtPct(r.lower_bound)}) was above the limit ${fmtPct(r.limit)}.`;
  },
  success_threshold_unreachable: (r) => {
    const failed = failedCount(r);
    return "Success threshold unreachable: "
      + (failed === null ? "when it paused, at most " : `when it paused, ${failed} of ${r.total} vehicles had failed, so at most `)
      + `${fmtPct(r.max_success_rate)} could succeed, below the required ${fmtPct(r.success_threshold)}.`;
  },
};

export function waveName(index, total) {
  if (index === 0 && total > 1) return "Wave 1 (canary)";
  return `Wave ${index + 1}`;
}

function isAutomaticPause(reason) {
  return Boolean(reason) && reason.code !== "operator";
}

// "Paused automatically by the gate in wave 1 (canary). " for the gate's pauses, else "".
export function pauseHeadline(reason, currentWave, waveCount) {
  if (!isAutomaticPause(reason)) return "";
  return `Paused automatically by the gate in ${waveName(reason.wave ?? currentWave, waveCount).toLowerCase()}. `;
}

// The reason in words; an unknown code reads as itself.
export function pauseReasonText(reason) {
  if (!reason) return "";
  const explain = REASONS[reason.code];
  return explain ? explain(reason) : `Paused: ${reason.code}${reason.note ? `: ${reason.note}` : ""}.`;
}
