// The side panel: the whole card of the address last clicked (who they are, from the card's
// profile block, above the numbers), suggestions in words, and every state the set-up can be in.
// Data comes from the service worker, photos too (as data: URLs); all of it is set as text.

import { el, list, pairs } from "./lib/dom.js";
import { profileSection, showPhoto } from "./lib/profile-dom.js";
import { profileBlock } from "./lib/profile.js";
import { BUCKETS, checkText, duration, messageLink, replyText, suggestions } from "./lib/text.js";

const root = document.getElementById("panel");
let timer = 0;
let shown = 0; // which render a photo answer belongs to (a later selection must not get an earlier photo)

function settingsButton(label = "Open settings") {
  const button = el("button", label, { type: "button", id: "open-settings" });
  button.addEventListener("click", () => chrome.runtime.openOptionsPage());
  return button;
}

function problem(state, heading, text, ...extra) {
  root.replaceChildren(el("h1", heading), el("p", text, { class: "problem", "data-state": state }), ...extra);
}

function link(href, text) {
  return el("a", text, { href, target: "_blank", rel: "noopener noreferrer" });
}

const GLOBAL = {
  not_configured: (view) => problem("not_configured", "Set up InboxLens",
    "InboxLens is not set up yet: open settings, enter your InboxLens server's URL and an API token made on "
    + "its Settings page.", settingsButton()),
  unauthorized: () => problem("unauthorized", "Token revoked",
    "The server refused the API token: it was revoked or mistyped. Create a new token on your server's "
    + "Settings page and enter it in settings.", settingsButton()),
  unreachable: (view) => problem("unreachable", "Server unreachable",
    `InboxLens cannot reach ${view.server}. Is the server running, and can this browser reach it?`),
  rate_limited: (view) => problem("rate_limited", "Slowing down",
    `The server asked InboxLens to wait; it tries again in about ${Math.ceil((view.status.extra.retryAfterMs ?? 60000) / 1000)} s.`),
  unavailable: () => problem("unavailable", "Server busy", "The server could not read its data just now; try again shortly."),
};

function reconnectNotice(view) {
  return el("p", null, { class: "problem", "data-state": "needs_reconnect" });
}

function render(view) {
  const state = view.status?.state;
  if (!view.configured) return GLOBAL.not_configured(view);
  if (GLOBAL[state] && state !== "not_configured") return GLOBAL[state](view);
  const nodes = [];
  if (state === "needs_reconnect" || view.account?.needs_reconnect) {
    const notice = reconnectNotice(view);
    const address = view.account?.address ?? view.status?.extra?.address ?? "";
    notice.append(`Your mailbox ${address} needs reconnecting: InboxLens cannot read new mail. `,
      link(`${view.server}/`, "Reconnect it on the InboxLens server"));
    nodes.push(notice);
  }
  if (!view.selection) {
    return root.replaceChildren(el("h1", "InboxLens"), ...nodes,
      el("p", "Click the badge beside a sender in Gmail or Outlook to see what InboxLens knows about them."));
  }
  const result = view.result;
  const address = view.selection.address;
  if (!result || result.state === "not_found") {
    nodes.unshift(el("h1", address), el("p", `No history with this address: ${address} has never written to `
      + "this mailbox and you have never written to it.", { "data-state": "not_found" }));
    return root.replaceChildren(...nodes);
  }
  if (result.state !== "ok") return GLOBAL.unavailable(view);
  const profile = who(result.profile);
  root.replaceChildren(el("h1", address), ...nodes, ...(profile ? [profile.section] : []), ...card(result.card, view));
  if (profile?.photo) askPhoto(profile, shown);
}

/** The profile section, or null: a block that is missing, odd or cannot be shown leaves the card as it was. */
function who(raw) {
  try {
    return profileSection(profileBlock(raw));
  } catch {
    return null;
  }
}

async function askPhoto(profile, generation) {
  const answer = await chrome.runtime.sendMessage({ type: "photo", url: profile.photo.url }).catch(() => null);
  if (generation === shown && answer && answer.ok === true) showPhoto(profile, answer.data);
}

function when(iso) {
  return iso ? iso.replace("T", " ").slice(0, 16) + " UTC" : "–";
}

function replyRows(replies) {
  return pairs([["They answer you", replyText(replies.theirs)], ["You answer them", replyText(replies.yours)],
                ["They, in working hours", replyText(replies.theirs_business)],
                ["You, in working hours", replyText(replies.yours_business)]]);
}

function buckets(replies) {
  const table = document.createElement("table");
  const head = list("tr", [el("th", ""), ...BUCKETS.map((b) => el("th", b))]);
  const line = (label, r) => list("tr", [el("th", label), ...r.buckets.map((n) => el("td", n))]);
  table.append(list("thead", [head]), list("tbody", [line("They", replies.theirs), line("You", replies.yours)]));
  table.setAttribute("id", "buckets");
  return table;
}

function pending(items, total, selection) {
  if (total === 0) return [el("p", "None.")];
  const rows = items.map((p) => {
    const li = el("li", `${when(p.sent_at)}, waiting ${duration(p.waiting)}`, { "data-pending": p.msg_key });
    const href = messageLink(selection.site, p.message_id, selection.gmailUser ?? 0);
    if (href) li.append(" ", link(href, "open in Gmail"));
    return li;
  });
  return [el("p", `${total} in all${total > items.length ? `; the ${items.length} oldest:` : ":"}`), list("ul", rows)];
}

function card(c, view) {
  const r = c.relationship;
  const tz = view.account?.time_zone ?? "UTC";
  const said = suggestions(c, tz);
  const out = [
    el("h2", "Suggestions"),
    said.length ? list("ul", said.map((s) => el("li", s))) : el("p", "Nothing to suggest yet."),
    el("h2", "Relationship"),
    pairs([["Strength", `${Math.round(r.strength)} / 100`], ["First contact", when(r.first_contact)],
           ["Last contact", when(r.last_contact)], ["Messages", `${r.received} received · ${r.sent} sent`],
           ["Last 30 / 90 / 365 days", `${r.last_30} / ${r.last_90} / ${r.last_365}`],
           ["Automated sender", r.automated ? "yes" : "no"]]),
    el("h2", "Reply times"), replyRows(c.replies), buckets(c.replies),
    el("h2", "You owe a reply"), ...pending(c.owed, c.owed_total, view.selection),
    el("h2", "Waiting for their reply"), ...pending(c.awaiting, c.awaiting_total, view.selection),
  ];
  out.push(el("h2", "Sender authenticity"));
  if (c.domain) {
    out.push(pairs([["Domain", c.domain.domain], ["Messages", c.domain.messages], ["DKIM", checkText(c.domain.dkim)],
                    ["SPF", checkText(c.domain.spf)], ["DMARC", checkText(c.domain.dmarc)]]));
  } else {
    out.push(el("p", "No mail received from this domain."));
  }
  for (const f of c.flags) {
    out.push(el("p", `⚠ ${when(f.sent_at)}: failed ${f.failed.join(", ").toUpperCase()}, unlike ${f.domain}'s usual mail`,
                { class: "flag" }));
  }
  for (const node of out) node.dataset && (node.dataset.section = "card");
  return out;
}

async function update() {
  const view = await chrome.runtime.sendMessage({ type: "panel" }).catch(() => null);
  shown += 1;
  if (view && typeof view === "object" && typeof view.configured === "boolean") render(view);
  else problem("error", "Something went wrong", "The extension's background worker gave no usable answer; "
    + "close and reopen the side panel.");
}

chrome.storage.onChanged.addListener((changes, area) => {
  if (area !== "session" || !("selection" in changes || "status" in changes)) return;
  clearTimeout(timer);
  timer = setTimeout(update, 100);
});
update();
