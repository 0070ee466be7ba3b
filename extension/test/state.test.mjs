import { test } from "node:test";
import assert from "node:assert/strict";

import {
  Gate, TtlCache, cardPath, classify, meFrom, nextRefreshMinutes, parseServer, pickAccount, retryAfterMs,
  toolbarBadge,
} from "../lib/api.js";
import { check, senderKind } from "../lib/messages.js";
import {
  badgeText, busiestHours, composeLine, duration, flagged, gmailUser, messageLink, replyText, suggestions,
} from "../lib/text.js";

const ID = "kedfbmhakcljommjfnkjpndeifbjneie";
const gmailTab = { id: ID, url: "https://mail.google.com/mail/u/0/#inbox", tab: { id: 7 }, frameId: 0 };
const optionsPage = { id: ID, url: `chrome-extension://${ID}/options.html` };

test("server URLs: https anywhere, http only on loopback, nothing extra", () => {
  assert.deepEqual(parseServer("https://lens.example.org/"),
    { ok: true, origin: "https://lens.example.org", base: "https://lens.example.org" });
  assert.equal(parseServer("http://127.0.0.1:8080").base, "http://127.0.0.1:8080");
  assert.equal(parseServer("https://x.test/inboxlens/").base, "https://x.test/inboxlens");
  for (const bad of ["http://lens.example.org", "ftp://x", "not a url", "https://u:p@x.test", "https://x.test/?a=1",
                     "https://x.test/#f", "javascript:alert(1)"]) {
    assert.equal(parseServer(bad).ok, false, bad);
  }
});

test("answers become states", () => {
  assert.deepEqual(classify(200, {}), { state: "ok" });
  assert.deepEqual(classify(0, null), { state: "unreachable" });
  assert.deepEqual(classify(401, { error: { code: "unauthorized" } }), { state: "unauthorized" });
  assert.deepEqual(classify(404, { error: { code: "not_found" } }), { state: "not_found" });
  assert.deepEqual(classify(409, { error: { code: "needs_reconnect" } }), { state: "needs_reconnect" });
  assert.deepEqual(classify(429, null, "7"), { state: "rate_limited", retryAfterMs: 7000 });
  assert.deepEqual(classify(503, null), { state: "unavailable" });
  assert.deepEqual(classify(400, { error: { code: "invalid_parameter" } }), { state: "error", code: "invalid_parameter" });
});

test("Retry-After: seconds or a date, at least 1 s, at most an hour, 60 s when unreadable", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(retryAfterMs("0", now), 1000);
  assert.equal(retryAfterMs("120", now), 120_000);
  assert.equal(retryAfterMs("Thu, 01 Jan 2026 00:00:30 GMT", now), 30_000);
  assert.equal(retryAfterMs("99999", now), 3_600_000);
  assert.equal(retryAfterMs("soon", now), 60_000);
});

test("the card path escapes the address", () => {
  assert.equal(cardPath(3, "dana.o'neil&co@x.test"), "/accounts/3/correspondents/dana.o'neil%26co%40x.test");
  assert.equal(cardPath(3, "a/b?c#d@x.test"), "/accounts/3/correspondents/a%2Fb%3Fc%23d%40x.test");
});

test("the mailbox: the one the page names, else the first active", () => {
  const accounts = [{ id: 1, address: "old@x.test", status: "reauth_required" }, { id: 2, address: "a@x.test", status: "active" }];
  assert.equal(pickAccount(accounts, "OLD@x.test").id, 1);
  assert.equal(pickAccount(accounts, null).id, 2);
  assert.equal(pickAccount([], null), null);
});

test("toolbar refresh: every 15 minutes, doubling after failures, at most 4 hours", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 10].map(nextRefreshMinutes), [15, 30, 60, 120, 240, 240]);
  assert.deepEqual(toolbarBadge(3, "ok"), { text: "3", color: "#c92a2a" });
  assert.equal(toolbarBadge(0, "ok").text, "");
  assert.equal(toolbarBadge(0, "unauthorized").text, "!");
  assert.equal(toolbarBadge(0, "not_configured").text, "");
});

test("the card cache: one entry per key until the TTL passes", () => {
  let now = 0;
  const cache = new TtlCache(1000, () => now, 2);
  cache.set("a", 1);
  now = 999;
  assert.equal(cache.get("a"), 1);
  now = 1000;
  assert.equal(cache.get("a"), undefined);
  cache.set("a", 1);
  cache.set("b", 2);
  cache.set("c", 3);
  assert.equal(cache.get("a"), undefined, "the oldest went first");
  assert.equal(cache.get("c"), 3);
});

test("the gate: at most N at once, and paused after a 429", async () => {
  let now = 0;
  const gate = new Gate(2, () => now);
  let running = 0;
  let most = 0;
  const task = async () => {
    running += 1;
    most = Math.max(most, running);
    await new Promise((r) => setImmediate(r));
    running -= 1;
  };
  await Promise.all(Array.from({ length: 7 }, () => gate.run(task)));
  assert.equal(most, 2);
  gate.pause(5000);
  assert.equal(gate.paused(), 5000);
  now = 6000;
  assert.equal(gate.paused(), 0);
});

test("messages: only this extension, content only from a mail tab, exact shapes", () => {
  const cards = { type: "cards", addresses: ["bob@friends.test"], account: null };
  assert.equal(check(cards, gmailTab, ID).kind, "content");
  assert.equal(check(cards, { ...gmailTab, id: "other" }, ID), null, "another extension");
  assert.equal(check(cards, { ...gmailTab, url: "https://evil.test/" }, ID), null, "not a mail origin");
  assert.equal(check(cards, { ...gmailTab, url: "https://mail.google.com.evil.test/" }, ID), null);
  assert.equal(check(cards, { ...gmailTab, tab: undefined }, ID), null, "no tab");
  assert.equal(check(cards, optionsPage, ID), null, "content messages come from content scripts only");
  assert.equal(check({ ...cards, extra: 1 }, gmailTab, ID), null, "an extra field");
  assert.equal(check({ type: "cards", addresses: [] , account: null }, gmailTab, ID), null, "empty");
  assert.equal(check({ type: "cards", addresses: ["<b>@x"], account: null }, gmailTab, ID), null);
  assert.equal(check({ type: "cards", addresses: Array(51).fill("a@b.c"), account: null }, gmailTab, ID), null);
  assert.equal(check({ type: "configure", server: "https://x", token: "ilk_abcdefgh" }, gmailTab, ID), null,
    "a mail page may not configure");
  assert.equal(check({ type: "configure", server: "https://x", token: "ilk_abcdefgh" }, optionsPage, ID).kind, "page");
  assert.equal(check({ type: "test" }, optionsPage, ID).kind, "page");
  assert.equal(check({ type: "nope" }, optionsPage, ID), null);
  assert.equal(check(null, optionsPage, ID), null);
  assert.equal(check(["test"], optionsPage, ID), null);
  assert.equal(senderKind({ id: ID, url: "https://outlook.live.com/mail/", tab: { id: 1 } }, ID), "content");
});

const card = (over = {}) => ({
  relationship: { correspondent: "bob@friends.test", received: 11, sent: 10, hours: [...Array(9).fill(0), 5, 4, 1, ...Array(12).fill(0)],
                  strength: 42, first_contact: "2026-01-01T00:00:00Z", last_contact: "2026-02-01T00:00:00Z" },
  replies: { yours: { count: 10, median: 7200, within_hour: 0, buckets: [0, 10, 0, 0, 0, 0] },
             theirs: { count: 1, median: 36000, within_hour: 0, buckets: [0, 0, 1, 0, 0, 0] } },
  owed: [{ msg_key: "ab", correspondent: "bob@friends.test", sent_at: "2026-02-01T00:00:00Z", waiting: 2 * 86400 }],
  owed_total: 1, awaiting: [], awaiting_total: 0, flags: [], domain: null, ...over,
});

test("words: durations, the badge, the compose line", () => {
  assert.deepEqual([60, 1800, 7200, 36000, 3 * 86400].map(duration), ["~1 min", "~30 min", "~2 h", "~10 h", "~3 days"]);
  assert.equal(badgeText({ state: "ok", card: card() }), "replies in ~10 h · you owe 1");
  assert.equal(badgeText({ state: "not_found" }), "no history");
  assert.equal(badgeText({ state: "unauthorized" }), "token revoked");
  assert.equal(badgeText(null), "…");
  assert.equal(badgeText({ state: "own" }), "you");
  const unanswered = card({ owed_total: 0, relationship: { ...card().relationship, received: 0, sent: 1 },
                            replies: { ...card().replies, theirs: { ...card().replies.theirs, median: null } } });
  assert.equal(badgeText({ state: "ok", card: unanswered }), "1 msg");
  assert.equal(composeLine("bob@friends.test", { state: "ok", card: card() }), "bob@friends.test: usually answers within ~10 h");
  assert.equal(composeLine("x@y.z", { state: "not_found" }), "x@y.z: no history with this address");
});

test("words: suggestions from hours, owed and flags", () => {
  assert.deepEqual(busiestHours(card().relationship.hours), { start: 9, end: 12, share: 1 });
  const flags = [{ correspondent: "bob@friends.test", domain: "friends.test", sent_at: "2026-02-03T00:00:00Z", failed: ["dmarc"] }];
  const said = suggestions(card({ flags }), "Asia/Tokyo");
  assert.deepEqual(said, [
    "They usually write between 09:00 and 12:00 (Asia/Tokyo): 100% of their mail.",
    "You usually answer them within ~2 h; this has waited 2 days.",
    "A message from bob@friends.test (2026-02-03) failed DMARC, unlike friends.test's usual mail.",
  ]);
  assert.equal(flagged({ state: "ok", address: "bob@friends.test", card: card({ flags }) }), true);
  assert.equal(flagged({ state: "ok", address: "carol@friends.test", card: card({ flags }) }), false);
});

test("reply times: the 90th percentile when the server sends it, nothing in its place when it does not", () => {
  const r = { count: 3, median: 7200, p90: 8 * 86400, within_hour: 1 / 3, buckets: [1, 1, 0, 0, 0, 1] };
  assert.equal(replyText(r), "median ~2 h · 90% within ~8 days · 3 replies · 33% within an hour");
  assert.equal(replyText({ ...r, p90: null }), "median ~2 h · 3 replies · 33% within an hour");
  const older = { count: 1, median: 120, within_hour: 1, buckets: [1, 0, 0, 0, 0, 0] }; // no p90 key at all
  assert.equal(replyText(older), "median ~2 min · 1 reply · 100% within an hour");
  assert.equal(replyText({ count: 0, median: null, p90: null, within_hour: null }), "no replies yet");
});

test("a message's link: Gmail's rfc822msgid search, escaped, in the page's Gmail account; none elsewhere", () => {
  assert.equal(messageLink("gmail", "b1@friends.test"),
    "https://mail.google.com/mail/u/0/#search/rfc822msgid:b1%40friends.test");
  assert.equal(messageLink("gmail", "<a+b/c?d#e&f@x.test>", 2),
    "https://mail.google.com/mail/u/2/#search/rfc822msgid:a%2Bb%2Fc%3Fd%23e%26f%40x.test");
  assert.equal(messageLink("outlook", "b1@friends.test"), null);
  for (const missing of [undefined, null, "", 42, "x".repeat(999)]) assert.equal(messageLink("gmail", missing), null);
  assert.equal(messageLink("gmail", "b1@friends.test", -1), null);
  assert.equal(gmailUser("https://mail.google.com/mail/u/3/#inbox"), 3);
  assert.equal(gmailUser("https://mail.google.com/mail/#inbox"), 0);
  assert.equal(gmailUser("https://evil.test/mail/u/5/"), 0);
});

test("a /me answer is used only with a user's email and accounts that have an id and an address", () => {
  const me = { user: { email: "a@example.test" }, accounts: [{ id: 1, address: "a@example.test", status: "active" }] };
  assert.equal(meFrom(me), me);
  assert.equal(meFrom({ user: { email: "a@example.test" }, accounts: [] }).accounts.length, 0);
  for (const bad of [null, [], "me", {}, { user: null, accounts: [] }, { user: { email: 7 }, accounts: [] },
                     { user: { email: "a@x.test" } }, { user: { email: "a@x.test" }, accounts: {} },
                     { user: { email: "a@x.test" }, accounts: [null] },
                     { user: { email: "a@x.test" }, accounts: [{ id: "1", address: "a@x.test" }] },
                     { user: { email: "a@x.test" }, accounts: [{ id: 1.5, address: "a@x.test" }] },
                     { user: { email: "a@x.test" }, accounts: [{ id: 1 }] }]) {
    assert.equal(meFrom(bad), null, JSON.stringify(bad));
  }
});
