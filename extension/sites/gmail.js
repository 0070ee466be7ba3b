// Gmail's conversation and compose markup: the one place that knows it.
//
// Where these selectors come from (read, not copied):
// - KartikTalwar/gmail.js (src/gmail.js, `api.dom.email` / `api.dom.thread`): each message of an
//   open conversation is a `div.adn` (with `data-legacy-message-id`), the subject `h2.hP`; the
//   sender is `span.gD` carrying `email` and `name` attributes, recipients `span.g2[email]`.
// - InboxSDK (src/platform-implementation-js/dom-driver/gmail/views/gmail-message-view.ts):
//   reads the sender from `.gD[email]` in the message header and recipients from `[email]`
//   elements; compose views are `div[role=dialog]` and recipient chips carry the address in
//   `email` (older) or `data-hovercard-id` (current).
// - Public scripts indexed by the search tool agree: `span.gD[email]`, `div.adn.ads`, `h2.hP`.
// The `email` attribute has been the stable part for a decade; class names are Gmail's
// minified ones and may change. If a conversation is open (h2.hP) but no sender is found,
// the markup is unrecognised: the content script logs that once and does nothing.

import { fromText, normalize } from "../lib/addresses.js";

export const SITE = "gmail";
export const HOSTS = ["mail.google.com"];
export const SELECTORS = Object.freeze({
  conversation: "h2.hP",
  message: "div.adn",
  sender: "span.gD[email]",
  recipient: "span.g2[email]",
  compose: "div[role=dialog]",
  composeRecipient: "[email], [data-hovercard-id]",
});

function addressOf(el) {
  return normalize(el.getAttribute("email")) ?? fromText(el.getAttribute("data-hovercard-id"));
}

/** What the page shows: the conversation's messages and the open compose windows. */
export function scan(root, title = "") {
  const messages = [];
  for (const message of root.querySelectorAll(SELECTORS.message)) {
    const senderEl = message.querySelector(SELECTORS.sender);
    const address = senderEl ? addressOf(senderEl) : null;
    if (!address) continue;
    const recipients = [...message.querySelectorAll(SELECTORS.recipient)].map(addressOf).filter(Boolean);
    messages.push({ anchor: senderEl, address, name: senderEl.getAttribute("name") ?? "", recipients });
  }
  const compose = [];
  for (const dialog of root.querySelectorAll(SELECTORS.compose)) {
    const recipients = [...dialog.querySelectorAll(SELECTORS.composeRecipient)].map(addressOf).filter(Boolean);
    compose.push({ anchor: dialog, recipients: [...new Set(recipients)] });
  }
  const conversation = root.querySelector(SELECTORS.conversation) !== null
    || root.querySelector(SELECTORS.message) !== null;
  return { conversation, recognised: !conversation || messages.length > 0, messages, compose,
           account: accountFromTitle(title) };
}

/** Gmail's tab title ends "- you@example.com - Gmail": the mailbox this page shows. */
export function accountFromTitle(title) {
  const match = /-\s*([^\s]+@[^\s]+)\s*-\s*Gmail\s*$/.exec(String(title));
  return match ? normalize(match[1]) : null;
}
