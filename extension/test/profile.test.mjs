// The card's profile block in the extension: checked field by field, links filtered, each field
// rendered as text with its source, and the photo fetched by the service worker's code from the
// configured server only (a real local HTTP server here), bounded in size, type and time.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";

import { examine } from "../lib/messages.js";
import {
  MAX_PHOTO_BYTES, dataUrl, fetchPhoto, isPhotoData, photoId, photoType,
} from "../lib/photo.js";
import { MAX_LINKS, linkHref, profileBlock, profileView, sourceNote } from "../lib/profile.js";
import { install } from "./fake-document.mjs";

install();
const { profileSection, showPhoto } = await import("../lib/profile-dom.js");

const ID = "kedfbmhakcljommjfnkjpndeifbjneie";
const panelPage = { id: ID, url: `chrome-extension://${ID}/panel.html` };
const gmailTab = { id: ID, url: "https://mail.google.com/mail/u/0/#inbox", tab: { id: 7 }, frameId: 0 };
const WORK = { kind: "carddav", label: "Work" };
const GRAVATAR = { kind: "gravatar", label: "Gravatar" };
const AT = "2026-03-01T10:00:00Z";
const PHOTO = "/api/v1/photos/AbC-_09xyz";

const full = () => ({
  name: { value: "Bob Example", source: WORK, refreshed_at: AT },
  organization: { value: "Friends & Co <b>", source: WORK, refreshed_at: AT },
  title: { value: "Chief Tester", source: GRAVATAR, refreshed_at: "2026-02-27T08:00:00+00:00" },
  photo: { url: PHOTO, source: GRAVATAR, refreshed_at: AT },
  links: [
    { kind: "url", value: "https://bob.example/", label: "home", source: WORK, refreshed_at: AT },
    { kind: "social", value: "javascript:alert(1)", label: "twitter", source: WORK, refreshed_at: AT },
    { kind: "impp", value: "xmpp:bob@friends.test", label: "", source: GRAVATAR, refreshed_at: AT },
  ],
});

// ---- the block ----

test("a missing or odd block is no block; the card is unaffected", () => {
  for (const odd of [undefined, null, "profile", 42, true, [], [full()], {}, { name: null, links: [] },
                     { links: "https://x.test" }, { name: "Bob" }, { photo: "/api/v1/photos/x" }]) {
    assert.equal(profileBlock(odd), null, JSON.stringify(odd));
  }
});

test("a whole block is kept as the contract says", () => {
  const block = profileBlock(full());
  assert.deepEqual(block.name, { value: "Bob Example", source: WORK, refreshed_at: AT });
  assert.equal(block.photo.url, PHOTO);
  assert.equal(block.links.length, 3);
  assert.deepEqual(profileBlock(block), block, "checking a checked block again changes nothing");
});

test("each field that does not fit is left out alone; the rest stays", () => {
  const raw = full();
  raw.name = { value: 42, source: WORK, refreshed_at: AT };
  raw.organization = { value: "Co", source: { kind: "myspace", label: "X" }, refreshed_at: AT };
  raw.title = { value: "T", source: { kind: "vcf" }, refreshed_at: AT };
  raw.photo = { url: "/api/v1/tokens", source: GRAVATAR, refreshed_at: AT };
  raw.links = [null, "https://x.test", { kind: "url", value: "https://ok.test/", label: 7, source: WORK, refreshed_at: 5 },
               { kind: "ftp", value: "ftp://x.test", label: "", source: WORK, refreshed_at: AT },
               { kind: "url", value: "https://nosource.test/", label: "" }];
  const block = profileBlock(raw);
  assert.equal(block.name, null);
  assert.equal(block.organization, null);
  assert.equal(block.title, null);
  assert.equal(block.photo, null);
  assert.deepEqual(block.links, [{ kind: "url", value: "https://ok.test/", label: "", source: WORK, refreshed_at: null }]);
});

test("bounds: long text, many links, a bad date", () => {
  const raw = full();
  raw.name.value = "x".repeat(1001);
  raw.title.refreshed_at = "yesterday";
  raw.links = Array.from({ length: 100 }, (_, i) => ({ kind: "url", value: `https://x.test/${i}`, label: "",
                                                       source: WORK, refreshed_at: AT }));
  const block = profileBlock(raw);
  assert.equal(block.name, null);
  assert.equal(block.title.refreshed_at, null, "kept, without a date");
  assert.equal(block.links.length, MAX_LINKS);
  assert.equal(profileBlock({ ...full(), name: { value: "   ", source: WORK, refreshed_at: AT } }).name, null);
});

// ---- links ----

test("links: http and https only, with a host and without user:password@", () => {
  assert.equal(linkHref("https://bob.example/a?b#c"), "https://bob.example/a?b#c");
  assert.equal(linkHref("http://bob.example"), "http://bob.example/");
  assert.equal(linkHref("HTTPS://Bob.Example/"), "https://bob.example/");
  for (const bad of ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<b>x</b>", "vbscript:x",
                     "xmpp:bob@friends.test", "mailto:bob@friends.test", "//evil.test/", "/relative", "ftp://x.test/",
                     "https://bank.test@evil.test/", "https://u:p@x.test/", " https://x.test/", "https://x.test/\n",
                     "java\tscript:alert(1)", "file:///etc/passwd", "chrome-extension://abc/options.html",
                     "https://" + "x".repeat(2100), null, 42]) {
    assert.equal(linkHref(bad), null, String(bad));
  }
});

test("sources in words", () => {
  assert.equal(sourceNote(WORK), "from Work (CardDAV)");
  assert.equal(sourceNote({ kind: "google", label: "Google Contacts" }), "from Google Contacts");
  assert.equal(sourceNote({ kind: "vcf", label: "Old phone" }), "from Old phone (.vcf import)");
  assert.equal(sourceNote(GRAVATAR), "from Gravatar");
  assert.equal(sourceNote({ kind: "libravatar", label: "Libravatar" }), "from Libravatar");
});

test("the view: rows in order, each with its source and day; links with or without a target", () => {
  const view = profileView(profileBlock(full()));
  assert.deepEqual(view.rows.map((r) => [r.label, r.text, r.note, r.day]), [
    ["Name", "Bob Example", "from Work (CardDAV)", "2026-03-01"],
    ["Organisation", "Friends & Co <b>", "from Work (CardDAV)", "2026-03-01"],
    ["Title", "Chief Tester", "from Gravatar", "2026-02-27"],
  ]);
  assert.deepEqual(view.photo, { url: PHOTO, note: "from Gravatar", day: "2026-03-01" });
  assert.deepEqual(view.links.map((l) => l.href), ["https://bob.example/", null, null]);
  assert.equal(profileView(null), null);
});

// ---- rendering (text only) ----

const byTag = (tag) => (e) => e.tagName === tag;

test("the section: each field as text with its source note, links as <a> only when allowed", () => {
  const { section, slot } = profileSection(profileBlock(full()));
  assert.equal(section.getAttribute("id"), "profile");
  const fields = section.findAll((e) => e.hasAttribute("data-field"));
  assert.deepEqual(fields.map((dd) => [dd.getAttribute("data-field"), dd.textContent]), [
    ["name", "Bob Example from Work (CardDAV), 2026-03-01"],
    ["organization", "Friends & Co <b> from Work (CardDAV), 2026-03-01"],
    ["title", "Chief Tester from Gravatar, 2026-02-27"],
  ]);
  assert.equal(section.findAll(byTag("B")).length, 0, "markup in a value stays text");
  const items = section.find((e) => e.getAttribute("id") === "profile-links").children;
  assert.deepEqual(items.map((li) => li.textContent), [
    "home: https://bob.example/ from Work (CardDAV), 2026-03-01",
    "twitter: javascript:alert(1) from Work (CardDAV), 2026-03-01",
    "Chat: xmpp:bob@friends.test from Gravatar, 2026-03-01",
  ]);
  const anchors = section.findAll(byTag("A"));
  assert.equal(anchors.length, 1);
  assert.deepEqual(Object.fromEntries(anchors[0].attributes), { href: "https://bob.example/", target: "_blank",
                                                                rel: "noopener noreferrer", class: "value" });
  assert.ok(slot.hasAttribute("hidden"), "no photo until the service worker hands one over");
  assert.equal(section.findAll(byTag("IMG")).length, 0);
});

test("only the fields the block has", () => {
  const { section, photo } = profileSection(profileBlock({ name: { value: "Ann", source: WORK, refreshed_at: null },
                                                           links: [] }));
  assert.deepEqual(section.findAll((e) => e.hasAttribute("data-field")).map((e) => e.textContent),
    ["Ann from Work (CardDAV)"]);
  assert.equal(section.find((e) => e.getAttribute("id") === "profile-links"), null);
  assert.equal(photo, null);
  assert.equal(profileSection(null), null);
});

test("the photo: shown only from a data: URL of ours, with its source", () => {
  const png = dataUrl("image/png", Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]));
  for (const bad of ["https://evil.test/a.png", PHOTO, "data:image/svg+xml;base64,PHN2Zz4=",
                     "data:text/html;base64,PGI+", "data:image/png,<svg>", "data:image/png;base64,AA==\" onerror=x",
                     null, 42]) {
    const profile = profileSection(profileBlock(full()));
    assert.equal(showPhoto(profile, bad), false, String(bad));
    assert.ok(profile.slot.hasAttribute("hidden"));
  }
  const profile = profileSection(profileBlock(full()));
  assert.equal(showPhoto(profile, png), true);
  assert.ok(!profile.slot.hasAttribute("hidden"));
  const [img] = profile.slot.findAll(byTag("IMG"));
  assert.equal(img.getAttribute("src"), png);
  assert.equal(img.getAttribute("alt"), "Photo of Bob Example");
  assert.equal(profile.slot.textContent, "from Gravatar, 2026-03-01");
  assert.equal(isPhotoData(`data:image/png;base64,${"A".repeat(4 * MAX_PHOTO_BYTES)}`), false, "too long");
});

// ---- the photo fetch, against a real local server ----

const PNG = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(100, 7)]);
const GIF = Buffer.from("GIF89a\x01\x00\x01\x00", "latin1");
let server;
let base;
const seen = [];

const ROUTES = {
  ok: (res) => res.writeHead(200, { "Content-Type": "image/png" }).end(PNG),
  gif: (res) => res.writeHead(200, { "Content-Type": "image/gif; charset=binary" }).end(GIF),
  big: (res) => res.writeHead(200, { "Content-Type": "image/jpeg", "Content-Length": String(MAX_PHOTO_BYTES + 1) })
    .end(Buffer.alloc(MAX_PHOTO_BYTES + 1)),
  stream: (res) => { // no Content-Length: only counting the bytes finds it too large
    res.writeHead(200, { "Content-Type": "image/jpeg" });
    res.write(Buffer.from([0xff, 0xd8, 0xff]));
    for (let i = 0; i < 40; i += 1) res.write(Buffer.alloc(8192));
    res.end();
  },
  svg: (res) => res.writeHead(200, { "Content-Type": "image/svg+xml" }).end("<svg onload='x'/>"),
  html: (res) => res.writeHead(200, { "Content-Type": "text/html" }).end("<b>x</b>"),
  liar: (res) => res.writeHead(200, { "Content-Type": "image/png" }).end("<svg onload='x'/>"),
  missing: (res) => res.writeHead(404, { "Content-Type": "application/json" }).end('{"error":{}}'),
  moved: (res) => res.writeHead(302, { Location: "https://evil.test/a.png" }).end(),
  hang: () => {},
};

before(async () => {
  server = createServer((req, res) => {
    seen.push({ url: req.url, auth: req.headers.authorization, accept: req.headers.accept });
    const name = /^\/lens\/api\/v1\/photos\/([a-z]+)$/.exec(req.url)?.[1];
    (ROUTES[name] ?? ROUTES.missing)(res);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}/lens`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

const cfg = () => ({ server: base, token: "ilk_secret_token" });

test("photo URLs: the server's own photo route only", () => {
  const b = "https://lens.example.org/inboxlens";
  assert.equal(photoId(b, PHOTO), "AbC-_09xyz");
  assert.equal(photoId(b, `https://lens.example.org/inboxlens${PHOTO}`), "AbC-_09xyz");
  for (const bad of ["https://evil.test/api/v1/photos/x", `https://lens.example.org${PHOTO}`,
                     `http://lens.example.org/inboxlens${PHOTO}`, `https://lens.example.org:444/inboxlens${PHOTO}`,
                     `https://u:p@lens.example.org/inboxlens${PHOTO}`, `https://lens.example.org/inboxlens${PHOTO}?a=1`,
                     `//evil.test${PHOTO}`, "/api/v1/photos/../tokens", "/api/v1/photos/a%2Fb", "/api/v1/photos/",
                     "/api/v1/tokens", `${PHOTO}/x`, `/api/v1/photos/${"a".repeat(1201)}`, "data:image/png;base64,AA==",
                     null, 42]) {
    assert.equal(photoId(b, bad), null, String(bad));
  }
  assert.equal(photoType("image/PNG; q=1"), "image/png");
  assert.equal(photoType("image/webp"), null);
});

test("a photo is fetched with the token and handed over as a data: URL", async () => {
  seen.length = 0;
  const answer = await fetchPhoto(fetch, cfg(), "/api/v1/photos/ok");
  assert.equal(answer.ok, true, answer.reason);
  assert.equal(answer.data, `data:image/png;base64,${PNG.toString("base64")}`);
  assert.ok(isPhotoData(answer.data));
  assert.deepEqual(seen, [{ url: "/lens/api/v1/photos/ok", auth: "Bearer ilk_secret_token",
                            accept: "image/jpeg, image/png, image/gif" }]);
  const gif = await fetchPhoto(fetch, cfg(), `${base}/api/v1/photos/gif`);
  assert.equal(gif.data, `data:image/gif;base64,${GIF.toString("base64")}`, "an absolute URL on the server itself");
});

test("refused: another origin (never asked), too large, not an image, a lying type, errors, redirects, a hang",
  async () => {
    seen.length = 0;
    let asked = 0;
    const counting = (...args) => { asked += 1; return fetch(...args); };
    for (const elsewhere of ["https://evil.test/api/v1/photos/ok", `http://localhost:${server.address().port}/lens/api/v1/photos/ok`,
                             "/api/v1/accounts", "javascript:alert(1)"]) {
      const answer = await fetchPhoto(counting, cfg(), elsewhere);
      assert.deepEqual(answer, { ok: false, reason: "not a photo of the configured InboxLens server" });
    }
    assert.equal(asked, 0);
    assert.equal(seen.length, 0);
    const reasons = {};
    for (const name of ["big", "stream", "svg", "html", "liar", "missing", "moved"]) {
      const answer = await fetchPhoto(fetch, cfg(), `/api/v1/photos/${name}`);
      assert.equal(answer.ok, false, name);
      assert.ok(!answer.reason.includes(name) && !answer.reason.includes("ilk_"), answer.reason);
      reasons[name] = answer.reason;
    }
    assert.deepEqual(reasons, {
      big: "the photo is too large", stream: "the photo is too large", svg: "not a JPEG, PNG or GIF image",
      html: "not a JPEG, PNG or GIF image", liar: "not a JPEG, PNG or GIF image",
      missing: "the server answered 404", moved: "the server did not answer",
    });
    const started = Date.now();
    assert.deepEqual(await fetchPhoto(fetch, cfg(), "/api/v1/photos/hang", MAX_PHOTO_BYTES, 300),
      { ok: false, reason: "the server did not answer" });
    assert.ok(Date.now() - started < 5000);
  });

// ---- messages for photos ----

test("photo messages: from the extension's pages, with a photo URL; wrong shapes get a clear error", () => {
  assert.deepEqual(examine({ type: "photo", url: PHOTO }, panelPage, ID), { kind: "page",
                                                                           message: { type: "photo", url: PHOTO } });
  assert.deepEqual(examine({ type: "photo", url: PHOTO }, gmailTab, ID),
    { kind: "content", error: "photo: not from this page" });
  assert.deepEqual(examine({ type: "photo", url: "javascript:alert(1)" }, panelPage, ID),
    { kind: "page", error: 'photo: missing or malformed field "url"' });
  assert.deepEqual(examine({ type: "photo" }, panelPage, ID), { kind: "page", error: 'photo: missing or malformed field "url"' });
  assert.deepEqual(examine({ type: "photo", url: PHOTO, x: 1 }, panelPage, ID),
    { kind: "page", error: "photo: unexpected field" });
  assert.deepEqual(examine({ type: "toString" }, panelPage, ID), { kind: "page", error: "unknown message type" });
  assert.deepEqual(examine({ type: "__proto__" }, panelPage, ID), { kind: "page", error: "unknown message type" });
  assert.deepEqual(examine("panel", panelPage, ID), { kind: "page", error: "a message must be an object" });
  assert.equal(examine({ type: "photo", url: PHOTO }, { ...panelPage, id: "another" }, ID), null, "not ours: ignored");
  assert.equal(examine({ type: "photo", url: PHOTO }, { id: ID, url: "https://evil.test/" }, ID), null);
});
