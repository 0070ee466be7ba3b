// The rules the whole extension keeps, checked on its source: no markup from strings, no
// eval, no remote code, the token read only by the service worker, least permissions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { createHash } from "node:crypto";

const ROOT = new URL("../", import.meta.url);

function sources(dir = ROOT) {
  return readdirSync(dir).flatMap((name) => {
    const url = new URL(name, dir);
    if (statSync(url).isDirectory()) return name === "test" || name === "dist" ? [] : sources(new URL(`${name}/`, dir));
    return /\.(js|html|json|css)$/.test(name) ? [[url.href.slice(ROOT.href.length), readFileSync(url, "utf8")]] : [];
  });
}

test("no innerHTML, outerHTML, insertAdjacentHTML, document.write, eval or new Function anywhere", () => {
  for (const [name, text] of sources()) {
    for (const bad of ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                       "setTimeout(\"", "http://", "<script>"]) {
      assert.ok(!text.includes(bad) || (bad === "http://" && name === "manifest.json") || (bad === "http://" && /lib\/api\.js/.test(name)),
        `${name} contains ${bad}`);
    }
  }
});

test("only the service worker reads the stored token", () => {
  for (const [name, text] of sources()) {
    if (name === "sw.js") continue;
    assert.ok(!/storage\.local/.test(text), `${name} touches chrome.storage.local`);
  }
});

test("shadow roots are closed", () => {
  for (const [name, text] of sources()) {
    assert.ok(!/mode:\s*"open"/.test(text), name);
  }
});

test("the manifest asks for the least, and its key gives the documented id", () => {
  const manifest = JSON.parse(readFileSync(new URL("manifest.json", ROOT), "utf8"));
  assert.deepEqual(manifest.permissions, ["storage", "alarms", "sidePanel", "identity"]); // identity: the token hand-off
  assert.equal(manifest.host_permissions, undefined);
  // No site beyond the mail pages: the server is reached through its own CORS answer
  // (web.cors_origins names this extension's id), so no host permission is asked at all.
  assert.equal(manifest.optional_host_permissions, undefined);
  for (const script of manifest.content_scripts) {
    assert.deepEqual(script.matches, ["https://mail.google.com/*", "https://outlook.office.com/*",
                                      "https://outlook.live.com/*"]);
  }
  assert.ok(!JSON.stringify(manifest).includes("<all_urls>"));
  const der = Buffer.from(manifest.key, "base64");
  assert.ok(der.length > 200 && der.length < 600, "a public key (SubjectPublicKeyInfo), not a private one");
  const id = [...createHash("sha256").update(der).digest("hex").slice(0, 32)]
    .map((c) => String.fromCharCode(97 + parseInt(c, 16))).join("");
  assert.equal(id, "kedfbmhakcljommjfnkjpndeifbjneie");
});

test("only the service worker makes requests; extension pages load images from data: URLs only", () => {
  for (const [name, text] of sources()) {
    if (name === "sw.js") continue;
    for (const bad of [/\bfetch\(/, /XMLHttpRequest/, /WebSocket/, /sendBeacon/, /new Image\(/]) {
      assert.ok(!bad.test(text), `${name} matches ${bad}`);
    }
  }
  const manifest = JSON.parse(readFileSync(new URL("manifest.json", ROOT), "utf8"));
  const csp = Object.fromEntries(manifest.content_security_policy.extension_pages.split(";")
    .map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k, v]));
  assert.deepEqual(csp["img-src"], ["'self'", "data:"], "a profile photo arrives as data:, nothing remote");
  assert.deepEqual(csp["script-src"], ["'self'"]);
  assert.deepEqual(csp["object-src"], ["'none'"]);
});
