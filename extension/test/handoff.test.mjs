import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, webcrypto } from "node:crypto";

import { b64url, codeFrom, pkce, startUrl, tokenFrom } from "../lib/handoff.js";
import { check } from "../lib/messages.js";

const ID = "kedfbmhakcljommjfnkjpndeifbjneie";
const STATE = "c3RhdGUtb2YtdGhpcy1mbG93";
const CODE = "A".repeat(42) + "w";
const back = (query) => `https://${ID}.chromiumapp.org/handoff?${new URLSearchParams(query)}`;

test("PKCE: a fresh 32-byte verifier, its S256 challenge, a state; never the same twice", async () => {
  const one = await pkce(webcrypto);
  const two = await pkce(webcrypto);
  assert.match(one.verifier, /^[A-Za-z0-9_-]{43}$/);
  assert.match(one.state, /^[A-Za-z0-9_-]{22}$/);
  assert.equal(one.challenge, createHash("sha256").update(one.verifier).digest("base64url"));
  assert.notEqual(one.verifier, two.verifier);
  assert.notEqual(one.state, two.state);
  assert.equal(b64url(new Uint8Array([251, 255, 191])), "-_-_");
});

test("the flow starts at the server's own page, with the challenge, never the verifier", async () => {
  const flow = await pkce(webcrypto);
  const url = new URL(startUrl("https://lens.example.org/inboxlens", flow.state, flow.challenge));
  assert.equal(url.origin + url.pathname, "https://lens.example.org/inboxlens/extension/connect");
  assert.deepEqual([...url.searchParams.keys()], ["state", "challenge"]);
  assert.ok(!url.href.includes(flow.verifier));
});

test("only this extension's redirect, for this flow, with a well-formed code, ends it", () => {
  assert.deepEqual(codeFrom(back({ code: CODE, state: STATE }), ID, STATE), { ok: true, code: CODE });
  for (const bad of [
    back({ code: CODE, state: "another-flow-state" }), // a stale or injected flow
    `https://${"a".repeat(32)}.chromiumapp.org/handoff?code=${CODE}&state=${STATE}`, // another extension
    `https://evil.test/handoff?code=${CODE}&state=${STATE}`,
    `https://${ID}.chromiumapp.org/other?code=${CODE}&state=${STATE}`,
    back({ code: "short", state: STATE }), back({ state: STATE }), "not a url", undefined,
  ]) {
    assert.equal(codeFrom(bad, ID, STATE).ok, false, String(bad));
  }
  assert.deepEqual(codeFrom(back({ error: "access_denied", state: STATE }), ID, STATE),
    { ok: false, reason: "You cancelled the hand-off." });
});

test("the exchange's answer: a token of the right shape, or the server's words", () => {
  const token = `ilk_${"b".repeat(43)}`;
  assert.deepEqual(tokenFrom(201, { token, name: "Browser extension" }), { ok: true, token });
  assert.equal(tokenFrom(201, { token: "ilk_<img>" }).ok, false);
  assert.equal(tokenFrom(200, { token }).ok, false);
  assert.deepEqual(tokenFrom(400, { error: { code: "invalid_grant", message: "This hand-off code is unknown." } }),
    { ok: false, reason: "This hand-off code is unknown." });
  assert.deepEqual(tokenFrom(502, null), { ok: false, reason: "The server answered 502 to the hand-off." });
});

test("the hand-off message: from the extension's own pages only, with a server and nothing else", () => {
  const page = { id: ID, url: `chrome-extension://${ID}/options.html` };
  const gmail = { id: ID, url: "https://mail.google.com/mail/u/0/", tab: { id: 3 } };
  assert.ok(check({ type: "handoff", server: "https://lens.example.org" }, page, ID));
  assert.equal(check({ type: "handoff", server: "https://lens.example.org" }, gmail, ID), null);
  assert.equal(check({ type: "handoff", server: "https://x.test", token: `ilk_${"b".repeat(43)}` }, page, ID), null);
  assert.equal(check({ type: "handoff", server: "" }, page, ID), null);
  assert.equal(check({ type: "handoff" }, page, ID), null);
});
