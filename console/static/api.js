// The console's only way to the backend: the public /v1 API, authenticated by the session
// cookie, with the CSRF token on every request that changes something.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(ApiError.describe(status, code, detail));
    this.status = status;
    this.code = code;
    this.detail = detail;
  }

  static describe(status, code, detail) {
    if (Array.isArray(detail)) {
      const parts = detail.map((d) =>
        d && typeof d === "object" ? `${(d.loc || []).join(".")}: ${d.msg}` : String(d));
      return parts.join("; ") || `${status} ${code}`;
    }
    if (detail && typeof detail === "object") return JSON.stringify(detail);
    return detail ? String(detail) : `${status} ${code || "error"}`;
  }
}

let csrfToken = null;
let onUnauthorized = () => {};

export function setSession(session) {
  csrfToken = session ? session.csrf_token : null;
}

export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

function url(path, params) {
  const u = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) u.searchParams.append(key, v);
  }
  return u.pathname + u.search;
}

async function request(method, path, { params, json, body, headers } = {}) {
  const h = { Accept: "application/json", ...(headers || {}) };
  if (method !== "GET" && csrfToken) h["X-CSRF-Token"] = csrfToken;
  let payload = body;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  const response = await fetch(url(path, params), {
    method, headers: h, body: payload, credentials: "same-origin",
  });
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) {
    const err = new ApiError(response.status, data && data.error, data && data.detail);
    if (response.status === 401 && path !== "/v1/session") onUnauthorized(err);
    throw err;
  }
  return data;
}

export const api = {
  get: (path, params) => request("GET", path, { params }),
  post: (path, json, params) => request("POST", path, { json: json ?? {}, params }),
  put: (path, json) => request("PUT", path, { json }),
  patch: (path, json) => request("PATCH", path, { json }),
  del: (path) => request("DELETE", path),
  // Raw bytes (a File or Blob) as the request body, described by query parameters.
  upload: (path, blob, params) => request("POST", path, {
    body: blob, params, headers: { "Content-Type": "application/octet-stream" },
  }),
};
