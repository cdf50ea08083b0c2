// The gateway's /api/v1, with the signed-in person's token. Errors arrive as the
// contract's JSON body {error: {code, message, details}} and are thrown as ApiError.
const SESSION_KEY = "lastmile.session";
const BASE = "/api/v1";

export const session = {
  get() {
    try {
      return JSON.parse(localStorage.getItem(SESSION_KEY));
    } catch {
      return null;
    }
  },
  set(value) {
    localStorage.setItem(SESSION_KEY, JSON.stringify(value));
  },
  clear() {
    localStorage.removeItem(SESSION_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.details = error.details || {};
  }
}

function withQuery(path, query) {
  const pairs = Object.entries(query || {}).filter(([, value]) => value !== undefined && value !== null && value !== "");
  return pairs.length ? `${path}?${new URLSearchParams(pairs)}` : path;
}

export async function request(method, path, { body, query, headers = {}, raw = false } = {}) {
  const current = session.get();
  const sent = { ...headers };
  if (current) sent.Authorization = `Bearer ${current.token}`;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(BASE + withQuery(path, query), {
      method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, { code: "network", message: "The gateway did not answer" });
  }
  if (!response.ok) {
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch {
      // Not the JSON error body (a proxy's page, say): the status alone tells.
    }
    if (response.status === 401 && current) {
      session.clear();
      window.dispatchEvent(new Event("lastmile:signed-out"));
    }
    throw new ApiError(response.status, error);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

export const get = (path, query) => request("GET", path, { query });
export const post = (path, body = {}, options = {}) => request("POST", path, { body, ...options });
export const patch = (path, body) => request("PATCH", path, { body });
