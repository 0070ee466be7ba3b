import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { parse } from "./dom-shim.mjs";
import * as gmail from "../sites/gmail.js";
import * as outlook from "../sites/outlook.js";
import { distinct, fromText, isAddress, normalize } from "../lib/addresses.js";

const fixture = (name) => parse(readFileSync(new URL(`fixtures/${name}`, import.meta.url), "utf8"));
const template = (name, id) => {
  const html = readFileSync(new URL(`fixtures/${name}`, import.meta.url), "utf8");
  return parse(new RegExp(`<template id="${id}">([\\s\\S]*?)</template>`).exec(html)[1]);
};

test("gmail: each message's sender, To and Cc, in order, lower-cased", () => {
  const found = gmail.scan(fixture("gmail.html"), "Inbox - alice@lens.test - Gmail");
  assert.equal(found.conversation, true);
  assert.equal(found.recognised, true);
  assert.deepEqual(found.messages.map((m) => m.address),
    ["bob@friends.test", "ceo@corp.test", "colleague@corp.test", "bob@friends.test", "nobody@unknown.test"]);
  assert.deepEqual(found.messages[0].recipients, ["alice@lens.test", "colleague@corp.test"]);
  assert.deepEqual(found.messages[2].recipients, ["alice@lens.test", "bob@friends.test"]);
  assert.equal(found.messages[0].anchor.getAttribute("class"), "gD");
  assert.equal(found.account, "alice@lens.test");
});

test("gmail: a long thread asks once per distinct address, never for the mailbox itself", () => {
  const found = gmail.scan(fixture("gmail.html"), "Inbox - alice@lens.test - Gmail");
  const all = found.messages.flatMap((m) => [m.address, ...m.recipients]);
  assert.deepEqual(distinct(all, found.account),
    ["bob@friends.test", "colleague@corp.test", "ceo@corp.test", "nobody@unknown.test"]);
});

test("gmail: compose recipients come from the chips' hovercard ids", () => {
  const found = gmail.scan(fixture("gmail.html"));
  assert.deepEqual(found.compose.map((c) => c.recipients), [["bob@friends.test"]]);
});

test("gmail: an address with HTML-significant characters is kept as text", () => {
  const found = gmail.scan(template("gmail.html", "thread-2"));
  assert.equal(found.messages[0].address, "dana.o'neil&co@elsewhere.test");
  assert.equal(found.messages[0].name, "<img src=x onerror=\"window.pwned=1\">Dana");
});

test("gmail: a conversation in markup it does not know is unrecognised (and nothing is guessed)", () => {
  const found = gmail.scan(template("gmail.html", "unknown"));
  assert.equal(found.conversation, true);
  assert.equal(found.recognised, false);
  assert.deepEqual(found.messages, []);
});

test("gmail: a page with no conversation open is fine", () => {
  const found = gmail.scan(parse("<div role=main><table class=F></table></div>"));
  assert.equal(found.conversation, false);
  assert.equal(found.recognised, true);
});

test("gmail: the mailbox's address from the tab title", () => {
  assert.equal(gmail.accountFromTitle("Inbox (3) - Alice@Lens.test - Gmail"), "alice@lens.test");
  assert.equal(gmail.accountFromTitle("Gmail"), null);
});

test("outlook: senders from title or 'Name <address>' text, recipients from To/Cc", () => {
  const found = outlook.scan(fixture("outlook.html"));
  assert.deepEqual(found.messages.map((m) => m.address), ["bob@friends.test", "ceo@corp.test"]);
  assert.deepEqual(found.messages[0].recipients, ["alice@lens.test", "colleague@corp.test"]);
  assert.deepEqual(found.messages[1].recipients, ["alice@lens.test"]);
  assert.equal(found.messages[1].name, "The CEO");
  assert.deepEqual(found.compose.map((c) => c.recipients), [["colleague@corp.test"]]);
});

test("outlook: a message region without a sender persona is unrecognised", () => {
  const found = outlook.scan(parse('<div id="ReadingPaneContainerId"><div aria-label="Email message">'
    + "<span>someone</span></div></div>"));
  assert.equal(found.recognised, false);
});

test("addresses: what counts as one", () => {
  assert.equal(normalize(" Bob@Friends.TEST "), "bob@friends.test");
  assert.equal(fromText("Bob Friend <bob@friends.test>"), "bob@friends.test");
  assert.equal(fromText("mail bob@friends.test now"), "bob@friends.test");
  assert.equal(fromText("no address"), null);
  for (const bad of ["", "a", "a@", "@b", "a b@c.d", "<x>@y.z", "a@b@c", "a..b@c.d", "x".repeat(400) + "@y.z"]) {
    assert.equal(isAddress(bad), false, bad);
  }
});

test("outlook: a message open by its URL with no message region found is unrecognised; the inbox alone is not", () => {
  const empty = parse('<div id="ReadingPaneContainerId"><div>Select an item to read</div></div>');
  assert.equal(outlook.scan(empty, "", "https://outlook.office.com/mail/inbox/id/AAQkADAwATM0MDAAMS1iNTcw").recognised,
    false);
  assert.equal(outlook.scan(empty, "", "https://outlook.office.com/mail/inbox").recognised, true);
  assert.equal(outlook.scan(empty, "", "not a url").recognised, true);
  const found = outlook.scan(fixture("outlook.html"), "", "https://outlook.live.com/mail/0/inbox/id/AQMk%3D");
  assert.equal(found.recognised, true);
  assert.equal(found.messages.length, 2);
});
