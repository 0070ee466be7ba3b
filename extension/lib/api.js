// The service worker's view of the InboxLens REST API, as pure functions over plain data:
// which server URLs are acceptable, what an answer means for the extension (its "state"),
// how long to wait after a 429 or a failure, and a card cache with a short TTL.
// Nothing here touches chrome.*, and the one function that makes a request (apiGet) is handed
// its fetch, so `node --test` covers it all (apiGet against a real local server).

export const CARD_TTL_MS = 5 * 60 * 1000; // a card is re-fetched at most once per 5 minutes
export const ME_TTL_MS = 60 * 1000;
export const MAX_IN_FLIGHT = 4; // far under the server's burst (web.api_burst, 60 by default)
export const REFRESH_MINUTES = 15;
export const MAX_REFRESH_MINUTES = 240;
export const API_TIMEOUT_MS = 15_000; // one API request, answer and body together (the server answers in ms)
const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** The server's base URL from what the user typed, or why it is refused.
 *  https anywhere; plain http only on loopback, because the token must never cross a network in clear. */
export function parseServer(text) {
  let url;
  try {
    url = new URL(String(text).trim());
  } catch {
    return { ok: false, reason: "Not a URL: type it like https://inboxlens.example.org" };
  }
  if (url.username || url.password || url.search || url.hash) {
    return { ok: false, reason: "Leave out user names, ?query and #fragment." };
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && LOOPBACK.has(url.hostname))) {
    return { ok: false, reason: "Use https:// (plain http:// only for localhost)." };
  }
  const base = url.origin + url.pathname.replace(/\/+$/, "");
  return { ok: true, origin: url.origin, base };
}

export function apiUrl(base, path) {
  return `${base}/api/v1${path}`;
}

export function cardPath(accountId, address) {
  return `/accounts/${encodeURIComponent(String(accountId))}/correspondents/${encodeURIComponent(address)}`;
}

/** Seconds or an HTTP date, as milliseconds to wait (at least 1 s, at most an hour). */
export function retryAfterMs(header, now = Date.now()) {
  const text = String(header ?? "").trim();
  let ms = /^\d+$/.test(text) ? Number(text) * 1000 : Date.parse(text) - now;
  if (!Number.isFinite(ms)) ms = 60_000;
  return Math.min(Math.max(ms, 1000), 3_600_000);
}

/** What an HTTP answer (or a failed fetch: status 0) means for the extension. */
export function classify(status, body, retryAfter, now = Date.now()) {
  if (status >= 200 && status < 300) return { state: "ok" };
  const code = body && body.error && typeof body.error.code === "string" ? body.error.code : "";
  if (status === 0) return { state: "unreachable" };
  if (status === 401) return { state: "unauthorized" };
  if (status === 404) return { state: "not_found" };
  if (status === 409 || code === "needs_reconnect") return { state: "needs_reconnect" };
  if (status === 429) return { state: "rate_limited", retryAfterMs: retryAfterMs(retryAfter, now) };
  if (status >= 500) return { state: "unavailable" };
  return { state: "error", code };
}

/** States that say something about the whole set-up (shown in the panel), not one address. */
export function isGlobal(state) {
  return ["not_configured", "unreachable", "unauthorized", "rate_limited", "unavailable", "needs_reconnect"]
    .includes(state);
}

/** The mailbox the mail page shows: the one whose address the page names, else the only or first active. */
export function pickAccount(accounts, hint) {
  if (!Array.isArray(accounts) || accounts.length === 0) return null;
  const wanted = typeof hint === "string" ? hint.toLowerCase() : "";
  return accounts.find((a) => String(a.address).toLowerCase() === wanted)
    ?? accounts.find((a) => a.status === "active") ?? accounts[0];
}

/** A /me answer the extension can use: the body when it has a user's email and a list of
 *  accounts each with a whole-number id and an address; null for anything else (a server that
 *  answers that is "unavailable", not a reason to throw deep in the service worker). */
export function meFrom(body) {
  const object = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
  if (!object(body) || !object(body.user) || typeof body.user.email !== "string") return null;
  if (!Array.isArray(body.accounts)) return null;
  const usable = (a) => object(a) && Number.isSafeInteger(a.id) && typeof a.address === "string";
  return body.accounts.every(usable) ? body : null;
}

/** Minutes until the next toolbar refresh: every 15, doubling after each failure up to 4 h. */
export function nextRefreshMinutes(failures) {
  return Math.min(REFRESH_MINUTES * 2 ** Math.max(0, failures), MAX_REFRESH_MINUTES);
}

/** The toolbar badge for a number of owed replies, or a state that stops us counting. */
export function toolbarBadge(owed, state) {
  if (state === "ok") return { text: owed > 0 ? String(Math.min(owed, 999)) : "", color: "#c92a2a" };
  if (state === "not_configured") return { text: "", color: "#666666" };
  return { text: "!", color: state === "unauthorized" || state === "needs_reconnect" ? "#c92a2a" : "#666666" };
}

/** Cards by key with a TTL; an injected clock keeps it testable. Bounded: the oldest go first. */
export class TtlCache {
  constructor(ttlMs = CARD_TTL_MS, clock = Date.now, max = 500) {
    this.ttlMs = ttlMs;
    this.clock = clock;
    this.max = max;
    this.entries = new Map();
  }

  get(key) {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (this.clock() - entry.at >= this.ttlMs) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value) {
    this.entries.delete(key);
    this.entries.set(key, { value, at: this.clock() });
    while (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value);
  }

  clear() {
    this.entries.clear();
  }
}

/** At most `limit` tasks at once, and none while paused (after a 429, until Retry-After has passed). */
export class Gate {
  constructor(limit = MAX_IN_FLIGHT, clock = Date.now, sleep = (ms) => new Promise((r) => setTimeout(r, ms))) {
    this.limit = limit;
    this.clock = clock;
    this.sleep = sleep;
    this.active = 0;
    this.waiting = [];
    this.pausedUntil = 0;
  }

  pause(ms) {
    this.pausedUntil = Math.max(this.pausedUntil, this.clock() + ms);
  }

  paused() {
    return Math.max(0, this.pausedUntil - this.clock());
  }

  async run(task) {
    if (this.active >= this.limit) await new Promise((resolve) => this.waiting.push(resolve));
    this.active += 1;
    try {
      return await task();
    } finally {
      this.active -= 1;
      this.waiting.shift()?.();
    }
  }
}

const UNREACHABLE = Object.freeze({ verdict: { state: "unreachable" }, body: null });

/** One GET to the API with the token: {verdict, body}. Bounded: a server that does not answer,
 *  or stalls in the middle of its body, is "unreachable" after `timeoutMs` (the Gate's slot
 *  is not held for ever). A 2xx whose body is not a JSON object is "unavailable": the caller
 *  can rely on an "ok" body being an object. Never logs the token. */
export async function apiGet(fetchFn, cfg, path, timeoutMs = API_TIMEOUT_MS) {
  const signal = AbortSignal.timeout(timeoutMs);
  let response;
  try {
    response = await fetchFn(apiUrl(cfg.server, path), {
      headers: { Authorization: `Bearer ${cfg.token}`, Accept: "application/json" },
      credentials: "omit", cache: "no-store", redirect: "error", signal,
    });
  } catch {
    return UNREACHABLE;
  }
  const body = await response.json().catch(() => null);
  if (signal.aborted) return UNREACHABLE;
  const verdict = classify(response.status, body, response.headers.get("Retry-After"));
  if (verdict.state === "ok" && (body === null || typeof body !== "object" || Array.isArray(body))) {
    return { verdict: { state: "unavailable" }, body: null };
  }
  return { verdict, body };
}
