// The admin API as the console uses it: the bearer token (kept in this
// tab's sessionStorage once entered) and JSON requests with clear errors.

const TOKEN_KEY = "mailplug.adminToken";

export class AuthError extends Error {
  constructor(message, sent) {
    super(message);
    // The token the refused request carried (null: none was sent).
    this.sent = sent;
    this.refused = Boolean(sent);
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// One request. `body` is sent as JSON; the answer is parsed as JSON, or
// returned as text for `text: true`. 401 raises AuthError, any other
// non-2xx an ApiError with the server's `error` message.
export async function api(path, { method = "GET", body, text = false, signal } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, signal, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "the daemon cannot be reached (is it running?)");
  }
  if (response.status === 401) {
    throw new AuthError(t ? "the admin token was refused" : "this daemon requires an admin token", t);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const data = await response.json();
      if (data && typeof data.error === "string") message = data.error;
    } catch {
      // Not JSON: keep the status line.
    }
    throw new ApiError(response.status, message);
  }
  return text ? response.text() : response.json();
}
