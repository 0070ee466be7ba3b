// The content script on Gmail and Outlook on the web. It finds the addresses on the page
// (sites/*.js), asks the service worker for their cards, and shows the answers as text in
// closed shadow roots: a badge beside each sender, one line per compose recipient. It never
// sees the API token and never talks to the server itself.

import * as gmail from "../sites/gmail.js";
import * as outlook from "../sites/outlook.js";
import { distinct } from "../lib/addresses.js";
import { badgeText, composeLine, flagged } from "../lib/text.js";

const SITES = [gmail, outlook];
const DEBOUNCE_MS = 250;
const MAX_ASK = 50;
const TRANSIENT = new Set(["unreachable", "rate_limited", "unavailable", "error"]);
const CSS = `
:host{all:initial}
.badge{font:12px/1.6 system-ui,sans-serif;margin-left:.5em;padding:0 .5em;border-radius:.8em;border:1px solid #c5cad3;
  background:#f3f5f8;color:#1d2330;cursor:pointer}
.badge:hover{background:#e4e8ee}
.warn{color:#b3261e;font-weight:700;margin-left:.25em}
.warn[hidden]{display:none}
ul{font:12px/1.5 system-ui,sans-serif;margin:.25em 0;padding:.25em .75em;list-style:none;background:#f3f5f8;
  color:#1d2330;border-top:1px solid #c5cad3}`;

let sheet = null;

function styles() {
  if (!sheet) {
    sheet = new CSSStyleSheet(); // constructable: no inline <style> for the page's CSP to refuse
    sheet.replaceSync(CSS);
  }
  return [sheet];
}

export function start() {
  const site = SITES.find((s) => s.HOSTS.includes(location.hostname));
  if (!site) return;
  const state = { site, results: new Map(), badges: new Map(), composes: new Map(), warned: false,
                  url: location.href, timer: 0 };
  const schedule = () => {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => refresh(state), DEBOUNCE_MS);
  };
  new MutationObserver(schedule).observe(document.documentElement, { childList: true, subtree: true });
  addEventListener("hashchange", schedule);
  addEventListener("popstate", schedule);
  schedule();
}

async function refresh(state) {
  if (state.url !== location.href) {
    state.url = location.href; // another conversation: ask again (the service worker's cache answers)
    state.results.clear();
  }
  const found = state.site.scan(document, document.title, location.href);
  if (!found.recognised) {
    if (!state.warned) {
      const name = state.site.SITE;
      console.info(`InboxLens: this ${name} page's markup is not one it knows (see sites/${name}.js); doing nothing.`);
    }
    state.warned = true;
    return;
  }
  prune(state);
  for (const message of found.messages) badgeFor(state, message, found.account);
  for (const compose of found.compose) composeFor(state, compose);
  const wanted = distinct([...found.messages.flatMap((m) => [m.address, ...m.recipients]),
                           ...found.compose.flatMap((c) => c.recipients)], found.account);
  // Not yet asked, or a transient failure (asked again on the next change of the page).
  const missing = wanted.filter((a) => !state.results.has(a) || TRANSIENT.has(state.results.get(a)?.state))
    .slice(0, MAX_ASK);
  if (missing.length > 0) {
    for (const a of missing) state.results.set(a, null);
    const answer = await chrome.runtime.sendMessage({ type: "cards", addresses: missing, account: found.account });
    for (const a of missing) {
      state.results.set(a, (answer && answer[a]) || { state: "error", address: a, card: null });
    }
  }
  paint(state, found);
}

function prune(state) {
  for (const [anchor, entry] of [...state.badges, ...state.composes]) {
    if (!anchor.isConnected || !entry.host.isConnected) {
      entry.host.remove();
      state.badges.delete(anchor);
      state.composes.delete(anchor);
    }
  }
}

function badgeFor(state, message, account) {
  const existing = state.badges.get(message.anchor);
  if (existing && existing.address === message.address) return;
  existing?.host.remove();
  const host = document.createElement("span");
  host.setAttribute("data-inboxlens", "badge");
  const root = host.attachShadow({ mode: "closed" });
  root.adoptedStyleSheets = styles();
  const button = document.createElement("button");
  button.className = "badge";
  button.type = "button";
  button.textContent = "…";
  const warn = document.createElement("span");
  warn.className = "warn";
  warn.textContent = "⚠";
  warn.title = "A message from this address failed a check its domain usually passes";
  warn.hidden = true;
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    if (event.isTrusted) chrome.runtime.sendMessage({ type: "open", address: message.address, account });
  });
  root.append(button, warn);
  message.anchor.after(host);
  state.badges.set(message.anchor, { host, button, warn, address: message.address });
}

function composeFor(state, compose) {
  let entry = state.composes.get(compose.anchor);
  if (!entry) {
    const host = document.createElement("div");
    host.setAttribute("data-inboxlens", "compose");
    const root = host.attachShadow({ mode: "closed" });
    root.adoptedStyleSheets = styles();
    const list = document.createElement("ul");
    root.append(list);
    compose.anchor.append(host);
    entry = { host, list, recipients: [] };
    state.composes.set(compose.anchor, entry);
  }
  entry.recipients = compose.recipients;
}

function paint(state) {
  for (const entry of state.badges.values()) {
    const result = state.results.get(entry.address);
    entry.button.textContent = badgeText(result);
    entry.warn.hidden = !flagged(result);
  }
  for (const entry of state.composes.values()) {
    const lines = entry.recipients.map((a) => {
      const li = document.createElement("li");
      li.textContent = composeLine(a, state.results.get(a));
      return li;
    });
    entry.list.replaceChildren(...lines);
    entry.host.hidden = lines.length === 0;
  }
}
