// Every message that reaches the service worker is checked here first (the vault's frame
// rule, in the browser): who sent it, from which page, and an exact shape. Anything else is
// dropped. Pure functions over plain data: `sender` is chrome.runtime.MessageSender.

import { isAddress } from "./addresses.js";

export const MAIL_ORIGINS = Object.freeze([
  "https://mail.google.com", "https://outlook.office.com", "https://outlook.live.com",
]);
export const MAX_ADDRESSES = 50; // a conversation's distinct addresses, per message

const SHAPES = {
  // from content scripts on a mail origin
  cards: { addresses: "addresses", account: "hint" },
  open: { address: "address", account: "hint" },
  // from the extension's own pages (options, side panel)
  configure: { server: "text", token: "token" },
  handoff: { server: "text" },
  test: {},
  panel: {},
  forget: {},
  refresh: {},
};
const FROM_CONTENT = new Set(["cards", "open"]);
const FIELD_CHECKS = {
  addresses: (v) => Array.isArray(v) && v.length > 0 && v.length <= MAX_ADDRESSES && v.every(isAddress),
  address: isAddress,
  hint: (v) => v === null || (typeof v === "string" && v.length <= 320),
  text: (v) => typeof v === "string" && v.length > 0 && v.length <= 2048,
  token: (v) => typeof v === "string" && /^[A-Za-z0-9_-]{8,200}$/.test(v),
};

export function originOf(url) {
  try {
    return new URL(url).origin;
  } catch {
    return "";
  }
}

/** "content", "page" (an extension page) or null: where a message may come from, by its sender. */
export function senderKind(sender, extensionId) {
  if (!sender || sender.id !== extensionId) return null;
  if (typeof sender.url === "string" && sender.url.startsWith(`chrome-extension://${extensionId}/`)) return "page";
  const origin = originOf(sender.url);
  if (sender.tab && typeof sender.tab.id === "number" && MAIL_ORIGINS.includes(origin)) return "content";
  return null;
}

function shapeOk(message) {
  if (!message || typeof message !== "object" || Array.isArray(message)) return false;
  const shape = SHAPES[message.type];
  if (!shape) return false;
  const keys = Object.keys(message).filter((k) => k !== "type");
  if (keys.length !== Object.keys(shape).length) return false;
  return keys.every((k) => k in shape && FIELD_CHECKS[shape[k]](message[k]));
}

/** The checked message with its sender's kind, or null to drop it. */
export function check(message, sender, extensionId) {
  const kind = senderKind(sender, extensionId);
  if (kind === null || !shapeOk(message)) return null;
  if (FROM_CONTENT.has(message.type) !== (kind === "content")) return null;
  return { kind, message };
}
