// The options page: the server URL and API token go straight to the service worker, which
// keeps them; this page never reads the token back. "Connect" asks the worker to fetch a token
// through the server's hand-off (lib/handoff.js) instead: this page never sees that one at all.
// It asks for the server's origin as an optional host permission (at run time, for that one
// origin) and tests the connection.

import { parseServer } from "./lib/api.js";
import { el } from "./lib/dom.js";

const $ = (id) => document.getElementById(id);
const result = $("result");
$("cors").textContent = `cors_origins = ["chrome-extension://${chrome.runtime.id}"]`;

function show(className, heading, lines = []) {
  result.replaceChildren(el("div", null, { class: className }));
  const box = result.firstChild;
  box.append(el("strong", heading), ...lines.map((line) => el("p", line)));
  return box;
}

const WORDS = {
  not_configured: "Not set up yet: enter the server URL and a token.",
  unreachable: "The server did not answer. Check the URL, that it is running, and that its web.cors_origins "
    + "lists this extension.",
  unauthorized: "The server refused this token: it was revoked or mistyped. Create a new one on the server's Settings page.",
  rate_limited: "The server asked us to slow down; try again in a minute.",
  unavailable: "The server is up but a backend did not answer; try again shortly.",
};

async function test() {
  const answer = await chrome.runtime.sendMessage({ type: "test" });
  if (answer.state !== "ok") return show("problem", WORDS[answer.state] ?? "The connection failed.");
  const box = show("ok", `Connected as ${answer.user}`);
  const items = answer.accounts.map((a) => {
    const li = el("li", `${a.address} (${a.provider}, ${a.status})`);
    if (a.needs_reconnect) li.append(" ", el("span", "needs reconnecting on the server", { class: "flag" }));
    return li;
  });
  box.append(el("p", answer.accounts.length ? "Your mailboxes:" : "No mailbox connected yet."));
  const ul = document.createElement("ul");
  ul.append(...items);
  box.append(ul);
  return box;
}

$("setup").addEventListener("submit", async (event) => {
  event.preventDefault();
  const parsed = parseServer($("server").value);
  if (!parsed.ok) return show("problem", parsed.reason);
  const saved = await chrome.runtime.sendMessage({ type: "configure", server: parsed.base,
                                                   token: $("token").value.trim() });
  $("token").value = "";
  if (!saved?.ok) return show("problem", saved?.reason ?? "That token does not look like an InboxLens token.");
  await test();
});

$("handoff").addEventListener("click", async () => {
  const parsed = parseServer($("server").value);
  if (!parsed.ok) return show("problem", parsed.reason);
  show("ok", `Waiting for you to allow InboxLens in the window of ${parsed.origin}…`);
  const done = await chrome.runtime.sendMessage({ type: "handoff", server: parsed.base });
  if (!done?.ok) return show("problem", done?.reason ?? "The hand-off failed.");
  await test();
});

$("test").addEventListener("click", () => test());
$("forget").addEventListener("click", async () => {
  await chrome.runtime.sendMessage({ type: "forget" });
  show("ok", "The token is forgotten. Revoke it on the server's Settings page too.");
});
