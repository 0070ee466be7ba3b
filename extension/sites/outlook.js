// Outlook on the web's reading pane and compose markup: the one place that knows it.
//
// UNVERIFIED: none of this has been checked against live Outlook on the web (it cannot be reached
// from where the extension is built and tested); the fixture page (test/fixtures/outlook.html)
// reproduces what the sources below describe, nothing more. Expect to adjust it at the first real look.
//
// Where these selectors come from (read, not copied; OWA could not be loaded from here):
// - The reading pane is `#ReadingPaneContainerId` (FlowCrypt-style webmail content scripts
//   found with the search tool use it as their `editor` root) or, in the newer OWA,
//   `[data-app-section="MailReadCompose"]` (fperezdev/wd-extension-poc, src/lib/consts.ts).
// - Each expanded message is a region labelled `aria-label="Email message"`; OWA's class
//   names are hashed per build, so only ARIA labels and data-* attributes are used here.
// - The sender persona is labelled `aria-label^="From:"` (or `[data-testid=SenderPersona]`)
//   and shows "Name <address>" in its text or `title`; the To and Cc lines are labelled
//   `aria-label^="To:"` / `aria-label^="Cc:"`, each recipient a `span` with the address in
//   `title` or text. Compose: the recipient wells are `[role=textbox][aria-label=To]` /
//   `[aria-label=Cc]`, each resolved recipient a `span[title*="@"]`.
// - An open message has its own URL, .../mail/<folder>/id/<item id> (OWA's address bar, as quoted in
//   Microsoft's support answers and in public userscripts): when the URL says a message is open but no
//   message region with a sender is found, the markup is unrecognised.
// Unknown markup means doing nothing; the content script says so once in the console.

import { fromText } from "../lib/addresses.js";

export const SITE = "outlook";
export const HOSTS = ["outlook.office.com", "outlook.live.com"];
export const SELECTORS = Object.freeze({
  pane: "#ReadingPaneContainerId, [data-app-section=\"MailReadCompose\"]",
  message: "[aria-label=\"Email message\"]",
  sender: "[aria-label^=\"From:\"], [data-testid=\"SenderPersona\"]",
  recipient: "[aria-label^=\"To:\"] span, [aria-label^=\"Cc:\"] span",
  compose: "div[role=\"dialog\"], [data-app-section=\"MailCompose\"]",
  composeRecipient: "[role=\"textbox\"][aria-label=\"To\"] span[title*=\"@\"], "
    + "[role=\"textbox\"][aria-label=\"Cc\"] span[title*=\"@\"]",
});

function addressOf(el) {
  return fromText(el.getAttribute("title")) ?? fromText(el.textContent);
}

const OPEN_ITEM = /\/mail\/(?:[^?#]*\/)?id\/[^/?#]+/;

/** What the page shows; `url` (location.href) tells whether a message should be open. */
export function scan(root, title = "", url = "") {
  const messages = [];
  for (const pane of root.querySelectorAll(SELECTORS.pane)) {
    for (const message of pane.querySelectorAll(SELECTORS.message)) {
      const senderEl = message.querySelector(SELECTORS.sender);
      const address = senderEl ? addressOf(senderEl) : null;
      if (!address) continue;
      const recipients = [...message.querySelectorAll(SELECTORS.recipient)].map(addressOf).filter(Boolean);
      messages.push({ anchor: senderEl, address, name: (senderEl.textContent ?? "").split("<")[0].trim(),
                      recipients: [...new Set(recipients)] });
    }
  }
  const compose = [];
  for (const dialog of root.querySelectorAll(SELECTORS.compose)) {
    const recipients = [...dialog.querySelectorAll(SELECTORS.composeRecipient)].map(addressOf).filter(Boolean);
    compose.push({ anchor: dialog, recipients: [...new Set(recipients)] });
  }
  let path = "";
  try {
    path = new URL(url).pathname;
  } catch {
    path = "";
  }
  const conversation = root.querySelector(SELECTORS.message) !== null || OPEN_ITEM.test(path);
  return { conversation, recognised: !conversation || messages.length > 0, messages, compose, account: null };
}
