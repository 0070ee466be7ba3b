// InboxLens service worker: the one privileged place. It alone reads the API token (from
// chrome.storage.local), makes every request to the InboxLens server, caches cards for a
// short TTL, keeps the toolbar badge (owed replies) fresh with the alarms API, opens the side
// panel, and runs the token hand-off (lib/handoff.js) when the options page asks for it. Content scripts and extension pages talk to it with messages of a fixed shape,
// checked on arrival (lib/messages.js): another sender is ignored, a wrong shape answered with
// an error. A card's profile block is checked (lib/profile.js) before anything keeps or shows
// it, and goes to the side panel only, never into a mail page; its photo is fetched here, with
// the token, from the configured server only, and handed to the panel as a data: URL
// (lib/photo.js). Nothing is sent anywhere but the server the user configured.

import {
  API_TIMEOUT_MS, CARD_TTL_MS, Gate, ME_TTL_MS, TtlCache, apiGet, apiUrl, cardPath, isGlobal, meFrom,
  nextRefreshMinutes, parseServer, pickAccount, toolbarBadge,
} from "./lib/api.js";
import { codeFrom, pkce, startUrl, tokenFrom } from "./lib/handoff.js";
import { examine } from "./lib/messages.js";
import { MAX_PHOTO_BYTES, fetchPhoto } from "./lib/photo.js";
import { profileBlock } from "./lib/profile.js";
import { gmailUser } from "./lib/text.js";

const ALARM = "refresh-owed";
const cards = new TtlCache(CARD_TTL_MS);
const photos = new TtlCache(CARD_TTL_MS, Date.now, 20); // data: URLs of at most MAX_PHOTO_BYTES each
const inflight = new Map();
const gate = new Gate();
let me = { at: 0, value: null, base: "" };

function forgetCards() {
  cards.clear();
  photos.clear();
  me = { at: 0, value: null, base: "" };
}

async function config() {
  const { server, token } = await chrome.storage.local.get(["server", "token"]);
  return typeof server === "string" && typeof token === "string" ? { server, token } : null;
}

async function setStatus(state, extra = {}) {
  const { status } = await chrome.storage.session.get("status");
  if (status && status.state === state && JSON.stringify(status.extra) === JSON.stringify(extra)) return;
  await chrome.storage.session.set({ status: { state, extra, at: Date.now() } });
}

/** One GET to the API, one of MAX_IN_FLIGHT at a time: lib/api.js apiGet (bounded in time). */
async function get(cfg, path) {
  const paused = gate.paused();
  if (paused > 0) return { verdict: { state: "rate_limited", retryAfterMs: paused }, body: null };
  return gate.run(async () => {
    const answer = await apiGet(fetch, cfg, path);
    if (answer.verdict.state === "rate_limited") gate.pause(answer.verdict.retryAfterMs);
    return answer;
  });
}

async function note(verdict) {
  if (verdict.state === "unauthorized") {
    forgetCards();
  }
  if (isGlobal(verdict.state)) {
    await setStatus(verdict.state, verdict.retryAfterMs ? { retryAfterMs: verdict.retryAfterMs } : {});
    // The toolbar says so at once, not at the next refresh (up to 15 minutes later).
    const badge = toolbarBadge(0, verdict.state);
    await chrome.action.setBadgeText({ text: badge.text });
    await chrome.action.setBadgeBackgroundColor({ color: badge.color });
  }
}

async function whoAmI(cfg, fresh = false) {
  if (!fresh && me.value && me.base === cfg.server && Date.now() - me.at < ME_TTL_MS) {
    return { verdict: { state: "ok" }, body: me.value, kept: true };
  }
  let answer = await get(cfg, "/me");
  if (answer.verdict.state === "ok" && meFrom(answer.body) === null) answer = { verdict: { state: "unavailable" } };
  if (answer.verdict.state === "ok") me = { at: Date.now(), value: answer.body, base: cfg.server };
  else await note(answer.verdict);
  return answer;
}

// The status says what the server answered last: a /me kept for a minute is no news, so only
// an answer just received sets it (a kept /me must not hide that the server went away).
async function answered(account) {
  if (account.needs_reconnect) await setStatus("needs_reconnect", { address: account.address });
  else await setStatus("ok");
}

async function accountFor(cfg, hint) {
  const answer = await whoAmI(cfg);
  if (answer.verdict.state !== "ok") return { verdict: answer.verdict };
  const account = pickAccount(answer.body.accounts, hint);
  if (!account) return { verdict: { state: "no_account" } };
  if (!answer.kept) await answered(account);
  return { verdict: { state: "ok" }, account };
}

async function cardFor(cfg, account, address) {
  const key = `${account.id}|${address}`;
  const cached = cards.get(key);
  if (cached) return cached;
  if (!inflight.has(key)) {
    inflight.set(key, (async () => {
      const { verdict, body } = await get(cfg, cardPath(account.id, address));
      const ok = verdict.state === "ok";
      const result = { state: verdict.state, address, time_zone: account.time_zone, card: ok ? body.card : null,
                       profile: ok ? profileBlock(body.profile) : null };
      if (verdict.state === "ok" || verdict.state === "not_found") {
        cards.set(key, result);
        await answered(account);
      } else await note(verdict);
      return result;
    })().finally(() => inflight.delete(key)));
  }
  return inflight.get(key);
}

async function lookUp(addresses, hint) {
  const cfg = await config();
  const fail = (state) => Object.fromEntries(addresses.map((a) => [a, { state, address: a, card: null }]));
  if (!cfg) {
    await setStatus("not_configured");
    return fail("not_configured");
  }
  const { verdict, account } = await accountFor(cfg, hint);
  if (verdict.state !== "ok") return fail(verdict.state);
  // The mailbox's own address (Outlook's page does not name it, so the content script cannot leave
  // it out) is never asked about: it is "you".
  const own = String(account.address).toLowerCase();
  const results = await Promise.all(addresses.map((a) => (a.toLowerCase() === own
    ? { state: "own", address: a, card: null } : cardFor(cfg, account, a))));
  return Object.fromEntries(results.map((r) => [r.address, r]));
}

async function panelView() {
  const cfg = await config();
  const { status, selection } = await chrome.storage.session.get(["status", "selection"]);
  const view = { configured: cfg !== null, server: cfg ? cfg.server : null, status: status ?? null,
                 selection: selection ?? null, result: null, account: null };
  if (!cfg) return { ...view, status: { state: "not_configured", extra: {} } };
  if (selection) {
    // The account first, then the card: the status shown is the last one set, and a /me kept
    // for a minute must not overwrite what the card's request just found (the server gone).
    const { account } = await accountFor(cfg, selection.account);
    if (account) view.account = { address: account.address, time_zone: account.time_zone,
                                  needs_reconnect: account.needs_reconnect };
    view.result = (await lookUp([selection.address], selection.account))[selection.address];
  }
  view.status = (await chrome.storage.session.get("status")).status ?? null;
  return view;
}

async function testConnection() {
  const cfg = await config();
  if (!cfg) return { state: "not_configured" };
  const { verdict, body } = await whoAmI(cfg, true);
  if (verdict.state !== "ok") return { state: verdict.state };
  await setStatus("ok");
  return { state: "ok", user: body.user.email,
           accounts: body.accounts.map((a) => ({ address: a.address, provider: a.provider, status: a.status,
                                                 needs_reconnect: a.needs_reconnect })) };
}

async function configure(server, token) {
  const parsed = parseServer(server);
  if (!parsed.ok) return { ok: false, reason: parsed.reason };
  await chrome.storage.local.set({ server: parsed.base, token });
  forgetCards();
  await chrome.storage.session.remove(["status", "failures"]);
  refreshToolbar();
  return { ok: true, server: parsed.base };
}

/** A token from the server without copy and paste (lib/handoff.js): the user approves in a window of the server. */
async function handOff(server) {
  const parsed = parseServer(server);
  if (!parsed.ok) return { ok: false, reason: parsed.reason };
  const flow = await pkce();
  let redirect;
  try {
    redirect = await chrome.identity.launchWebAuthFlow({ url: startUrl(parsed.base, flow.state, flow.challenge),
                                                         interactive: true });
  } catch (e) {
    // Chrome's words, e.g. "The user did not approve access." (window closed) or "Authorization page could not
    // be loaded." (the server did not answer).
    return { ok: false, reason: `The hand-off through ${parsed.origin} did not finish: ${String(e?.message ?? e)}` };
  }
  const got = codeFrom(redirect, chrome.runtime.id, flow.state);
  if (!got.ok) return got;
  let response;
  try {
    response = await fetch(apiUrl(parsed.base, "/extension/token"), {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ code: got.code, verifier: flow.verifier }),
      credentials: "omit", cache: "no-store", redirect: "error", signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
  } catch {
    return { ok: false, reason: `InboxLens cannot reach ${parsed.origin}: is web.cors_origins set on the server?` };
  }
  const answer = tokenFrom(response.status, await response.json().catch(() => null));
  return answer.ok ? configure(parsed.base, answer.token) : answer;
}

async function forget() {
  await chrome.storage.local.remove(["server", "token"]);
  forgetCards();
  await setStatus("not_configured");
  await chrome.action.setBadgeText({ text: "" });
  return { ok: true };
}

// ---- the toolbar badge: owed replies over all mailboxes, every 15 minutes, backing off on errors ----

async function owedTotal(cfg) {
  const answer = await whoAmI(cfg, true);
  if (answer.verdict.state !== "ok") return { state: answer.verdict.state };
  let total = 0;
  for (const account of answer.body.accounts) {  // whoAmI let only a usable /me through (meFrom)
    const { verdict, body } = await get(cfg, `/accounts/${account.id}/owed?limit=1`);
    if (verdict.state !== "ok") return { state: verdict.state };
    if (Number.isSafeInteger(body.total) && body.total > 0) total += body.total;
  }
  return { state: "ok", total };
}

async function refreshToolbar() {
  let state = "unavailable"; // what anything thrown below counts as: a failure, backed off from
  try {
    const cfg = await config();
    let total;
    ({ state, total } = cfg ? await owedTotal(cfg) : { state: "not_configured" });
    const badge = toolbarBadge(total ?? 0, state);
    await chrome.action.setBadgeText({ text: badge.text });
    await chrome.action.setBadgeBackgroundColor({ color: badge.color });
  } catch (e) {
    // The error's name, never its message: that may quote a URL.
    console.warn("InboxLens: the toolbar badge was not refreshed:", String(e?.name ?? "error"));
  } finally {
    // The next refresh is armed whatever happened above: one that threw must not end them all.
    const { failures = 0 } = await chrome.storage.session.get("failures").catch(() => ({}));
    const next = state === "ok" || state === "not_configured" ? 0 : failures + 1;
    await chrome.storage.session.set({ failures: next }).catch(() => {});
    await chrome.alarms.create(ALARM, { delayInMinutes: nextRefreshMinutes(next) });
  }
}

/** A profile photo for the side panel, as a data: URL (lib/photo.js says what is refused). */
async function photoFor(url) {
  const cfg = await config();
  if (!cfg) return { ok: false, reason: "not configured" };
  const key = `photo|${cfg.server}|${url}`;
  const kept = photos.get(key);
  if (kept) return { ok: true, data: kept };
  if (gate.paused() > 0) return { ok: false, reason: "the server asked to wait" };
  if (!inflight.has(key)) {
    inflight.set(key, gate.run(() => fetchPhoto(fetch, cfg, url, MAX_PHOTO_BYTES)).then((answer) => {
      if (answer.ok) photos.set(key, answer.data);
      return answer;
    }).finally(() => inflight.delete(key)));
  }
  return inflight.get(key);
}

/** The cards for a mail page: what its badges and compose lines need, without the profile (the panel's alone). */
async function forPage(addresses, account) {
  const results = await lookUp(addresses, account);
  return Object.fromEntries(Object.entries(results).map(([a, { profile, ...rest }]) => [a, rest]));
}

// ---- messages ----

const HANDLERS = {
  cards: (m) => forPage(m.addresses, m.account),
  open: async (m, sender) => {
    await chrome.storage.session.set({ selection: { address: m.address, account: m.account,
                                                    site: siteOf(sender.url), gmailUser: gmailUser(sender.url),
                                                    at: Date.now() } });
    return { ok: true };
  },
  configure: (m) => configure(m.server, m.token),
  handoff: (m) => handOff(m.server),
  test: () => testConnection(),
  panel: () => panelView(),
  forget: () => forget(),
  refresh: async () => { await refreshToolbar(); return { ok: true }; },
  photo: (m) => photoFor(m.url),
};

function siteOf(url) {
  return new URL(url).hostname === "mail.google.com" ? "gmail" : "outlook";
}

chrome.runtime.onMessage.addListener((message, sender, reply) => {
  const checked = examine(message, sender, chrome.runtime.id);
  if (checked === null) return false; // dropped: not this extension, or not from a mail page or its own page
  if (checked.error) {
    reply({ state: "error", error: "bad_message", reason: checked.error });
    return false;
  }
  if (checked.message.type === "open") {
    // Called at once, while the click's user gesture still counts.
    chrome.sidePanel.open({ tabId: sender.tab.id }).catch(() => {});
  }
  HANDLERS[checked.message.type](checked.message, sender).then(reply, () => reply({ state: "error" }));
  return true;
});

chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === ALARM) refreshToolbar();
});

chrome.runtime.onInstalled.addListener(() => {
  chrome.sidePanel.setPanelBehavior({ openPanelOnActionClick: true }).catch(() => {});
  refreshToolbar();
});

chrome.runtime.onStartup.addListener(() => refreshToolbar());
