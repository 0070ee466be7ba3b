// What the extension says, in words, from a card (the JSON of GET .../correspondents/{address}):
// the badge beside a sender, the compose line, the side panel's suggestions. Pure functions.

export const BUCKETS = ["< 1 h", "1–4 h", "4–24 h", "1–3 days", "3–7 days", "> 7 days"];

/** Seconds as a rough, readable duration: "~40 min", "~2 h", "~3 days". */
export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 3600) return `~${Math.max(1, Math.round(seconds / 60))} min`;
  if (seconds < 48 * 3600) return `~${Math.round(seconds / 3600)} h`;
  return `~${Math.round(seconds / 86400)} days`;
}

/** "1 msg", "2 msgs". */
export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** The badge's words for a card lookup ({state, card}), kept short. */
export function badgeText(result) {
  if (!result) return "…";
  if (result.state === "not_found") return "no history";
  if (result.state !== "ok") return STATE_WORDS[result.state] ?? "unavailable";
  const card = result.card;
  const parts = [];
  const theirs = card.replies.theirs.median;
  parts.push(theirs === null ? plural(card.relationship.received + card.relationship.sent, "msg")
    : `replies in ${duration(theirs)}`);
  if (card.owed_total > 0) parts.push(`you owe ${card.owed_total}`);
  return parts.join(" · ");
}

const STATE_WORDS = {
  own: "you",
  not_configured: "set up InboxLens",
  unauthorized: "token revoked",
  unreachable: "server unreachable",
  rate_limited: "busy, retrying",
  unavailable: "server busy",
  needs_reconnect: "reconnect mailbox",
};

/** Whether a card flags this address: a message from it failed a check its domain usually passes. */
export function flagged(result) {
  if (!result || result.state !== "ok") return false;
  const who = String(result.address ?? "").toLowerCase();
  return result.card.flags.some((f) => String(f.correspondent).toLowerCase() === who);
}

/** One line per compose recipient. */
export function composeLine(address, result) {
  if (!result) return `${address}: …`;
  if (result.state === "not_found") return `${address}: no history with this address`;
  if (result.state !== "ok") return `${address}: ${STATE_WORDS[result.state] ?? "unavailable"}`;
  const theirs = result.card.replies.theirs;
  if (theirs.median === null) return `${address}: has not answered you yet`;
  return `${address}: usually answers within ${duration(theirs.median)}`;
}

/** The 3-hour window of the day with most of their mail, if it holds at least 40% of it. */
export function busiestHours(hours) {
  if (!Array.isArray(hours) || hours.length !== 24) return null;
  const total = hours.reduce((a, b) => a + b, 0);
  if (total < 3) return null;
  let best = 0;
  let start = 0;
  for (let h = 0; h < 24; h += 1) {
    const sum = hours[h] + hours[(h + 1) % 24] + hours[(h + 2) % 24];
    if (sum > best) [best, start] = [sum, h];
  }
  return best / total >= 0.4 ? { start, end: (start + 3) % 24, share: best / total } : null;
}

const hh = (h) => `${String(h).padStart(2, "0")}:00`;

function days(seconds) {
  const d = Math.round(seconds / 86400);
  return d === 1 ? "1 day" : `${d} days`;
}

/** Suggestions in words; timeZone is the mailbox's (the card's hours are in it). */
export function suggestions(card, timeZone) {
  const out = [];
  const window = busiestHours(card.relationship.hours);
  if (window) {
    out.push(`They usually write between ${hh(window.start)} and ${hh(window.end)} (${timeZone}): `
      + `${Math.round(window.share * 100)}% of their mail.`);
  }
  const yours = card.replies.yours.median;
  const oldest = card.owed[0];
  if (oldest && yours !== null && oldest.waiting > yours) {
    out.push(`You usually answer them within ${duration(yours)}; this has waited ${days(oldest.waiting)}.`);
  } else if (oldest) {
    out.push(`Their message has waited ${duration(oldest.waiting)} for your answer.`);
  }
  if (card.replies.theirs.median !== null && card.awaiting[0]) {
    out.push(`They usually answer within ${duration(card.replies.theirs.median)}; `
      + `your message has waited ${duration(card.awaiting[0].waiting)}.`);
  }
  for (const flag of card.flags.slice(0, 3)) {
    out.push(`A message from ${flag.correspondent} (${flag.sent_at.slice(0, 10)}) failed `
      + `${flag.failed.map((c) => c.toUpperCase()).join(" and ")}, unlike ${flag.domain}'s usual mail.`);
  }
  return out;
}

/** "12 of 12 passed (100%)" for a domain's check count. */
export function checkText(count) {
  if (!count || count.checked === 0) return "no verdicts";
  return `${count.passed} of ${count.checked} passed (${Math.round((100 * count.passed) / count.checked)}%)`;
}

/** Gmail's link to one message: its search by Message-ID (RFC 5322, angle brackets dropped), in the Gmail
 *  account the click came from (/mail/u/<n>/). Outlook on the web has no documented URL that finds a message by
 *  its Message-ID (its deeplinks open compose or an item by Exchange id, which the server does not know), so
 *  Outlook, an unknown site or an item without a Message-ID (an older server) gets no link. */
export function messageLink(site, messageId, gmailUser = 0) {
  if (site !== "gmail" || typeof messageId !== "string") return null;
  const id = messageId.trim().replace(/^<(.*)>$/, "$1");
  if (id.length === 0 || id.length > 998) return null;
  if (!Number.isInteger(gmailUser) || gmailUser < 0 || gmailUser > 99) return null;
  return `https://mail.google.com/mail/u/${gmailUser}/#search/rfc822msgid:${encodeURIComponent(id)}`;
}

/** Which of the browser's Gmail accounts a mail page shows: the n of https://mail.google.com/mail/u/<n>/. */
export function gmailUser(url) {
  const match = /^https:\/\/mail\.google\.com\/mail\/u\/(\d{1,2})\//.exec(String(url ?? ""));
  return match ? Number(match[1]) : 0;
}

/** One line of reply times: the median, the 90th percentile when the server sends it (older ones do not),
 *  how many replies, and the share within an hour. */
export function replyText(r) {
  if (!r || r.median === null || r.median === undefined) return "no replies yet";
  const parts = [`median ${duration(r.median)}`];
  if (typeof r.p90 === "number") parts.push(`90% within ${duration(r.p90)}`);
  parts.push(r.count === 1 ? "1 reply" : `${r.count} replies`);
  parts.push(`${Math.round((r.within_hour ?? 0) * 100)}% within an hour`);
  return parts.join(" · ");
}
