// Every message that reaches the service worker is checked here first (the vault's frame
// rule, in the browser): who sent it, from which page, and an exact shape. Anything else is
// dropped; a message from this extension's own pages or content scripts that has the wrong
// shape is answered with a clear error instead (`examine`), so a caller is not left waiting.
// Pure functions over plain data: `sender` is chrome.runtime.MessageSender.

import { isAddress } from "./addresses.js";
import { PHOTO_PATH } from "./profile.js";

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
  photo: { url: "photo" }, // the side panel asks for a profile photo (lib/photo.js refuses other servers)
};
const FROM_CONTENT = new Set(["cards", "open"]);
const FIELD_CHECKS = {
  addresses: (v) => Array.isArray(v) && v.length > 0 && v.length <= MAX_ADDRESSES && v.every(isAddress),
  address: isAddress,
  hint: (v) => v === null || (typeof v === "string" && v.length <= 320),
  text: (v) => typeof v === "string" && v.length > 0 && v.length <= 2048,
  token: (v) => typeof v === "string" && /^[A-Za-z0-9_-]{8,200}$/.test(v),
  photo: (v) => typeof v === "string" && v.length <= 2048 && (PHOTO_PATH.test(v) || /^https?:\/\/[^\s]+$/i.test(v)),
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

/** Why a message does not have its type's exact shape, or "" when it does. */
export function shapeError(message) {
  if (!message || typeof message !== "object" || Array.isArray(message)) return "a message must be an object";
  const shape = Object.hasOwn(SHAPES, message.type) ? SHAPES[message.type] : null;
  if (!shape) return "unknown message type";
  const keys = Object.keys(message).filter((k) => k !== "type");
  const extra = keys.find((k) => !Object.hasOwn(shape, k));
  if (extra !== undefined) return `${message.type}: unexpected field`;
  const wrong = Object.keys(shape).find((k) => !keys.includes(k) || !FIELD_CHECKS[shape[k]](message[k]));
  return wrong === undefined ? "" : `${message.type}: missing or malformed field "${wrong}"`;
}

/** null to drop (not this extension, or not from a page that may talk to it); {kind, error} for a message
 *  of ours with the wrong shape or from the wrong kind of page (answered, not acted on); else {kind, message}. */
export function examine(message, sender, extensionId) {
  const kind = senderKind(sender, extensionId);
  if (kind === null) return null;
  const error = shapeError(message);
  if (error) return { kind, error };
  if (FROM_CONTENT.has(message.type) !== (kind === "content")) return { kind, error: `${message.type}: not from this page` };
  return { kind, message };
}

/** The checked message with its sender's kind, or null to drop it. */
export function check(message, sender, extensionId) {
  const examined = examine(message, sender, extensionId);
  return examined && examined.message ? examined : null;
}
