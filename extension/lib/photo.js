// A profile photo, fetched by the service worker with the API token and handed to the side panel
// as a data: URL, so the panel makes no request of its own and no third party learns who is
// looked at. Only from the configured InboxLens server's own photo route, only JPEG, PNG or GIF
// (the declared type and the first bytes must agree), at most MAX_PHOTO_BYTES, within
// PHOTO_TIMEOUT_MS. `fetchFn` is injected, so `node --test` drives it with real Response objects.

import { apiUrl } from "./api.js";
import { PHOTO_PATH } from "./profile.js";

export const MAX_PHOTO_BYTES = 256 * 1024;
export const PHOTO_TIMEOUT_MS = 10_000;
export const MAX_PHOTO_URL = 2048;
const MAGIC = {
  "image/jpeg": [0xff, 0xd8, 0xff],
  "image/png": [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a],
  "image/gif": [0x47, 0x49, 0x46, 0x38],
};
export const PHOTO_TYPES = Object.freeze(Object.keys(MAGIC));
const DATA_URL = /^data:image\/(jpeg|png|gif);base64,[A-Za-z0-9+/]+={0,2}$/;

/** The opaque id of a photo URL on `base` (the configured server), or null: "/api/v1/photos/<id>" as the
 *  server sends it, or the same as an absolute URL on the server itself. Nothing else. */
export function photoId(base, url) {
  if (typeof url !== "string" || url.length > MAX_PHOTO_URL) return null;
  const relative = PHOTO_PATH.exec(url);
  if (relative) return relative[1];
  let parsed;
  let server;
  try {
    parsed = new URL(url);
    server = new URL(base);
  } catch {
    return null;
  }
  if (parsed.origin !== server.origin || parsed.username || parsed.password || parsed.search || parsed.hash) return null;
  const prefix = server.pathname.replace(/\/+$/, "");
  if (!parsed.pathname.startsWith(`${prefix}/`)) return null;
  const own = PHOTO_PATH.exec(parsed.pathname.slice(prefix.length));
  return own ? own[1] : null;
}

/** The media type of an answer's Content-Type, when it is one of ours. */
export function photoType(header) {
  const type = String(header ?? "").split(";")[0].trim().toLowerCase();
  return PHOTO_TYPES.includes(type) ? type : null;
}

/** The body, read chunk by chunk and abandoned as soon as it passes `max` bytes; null when it does. */
export async function readBounded(response, max = MAX_PHOTO_BYTES) {
  if (!response.body) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return bytes;
}

export function startsAs(bytes, type) {
  const magic = MAGIC[type];
  return bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b);
}

export function dataUrl(type, bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return `data:${type};base64,${btoa(binary)}`;
}

/** Whether a value is a data: URL this module makes (the panel checks what it is handed before showing it). */
export function isPhotoData(value) {
  return typeof value === "string" && value.length <= 4 * Math.ceil(MAX_PHOTO_BYTES / 3) + 40 && DATA_URL.test(value);
}

const refuse = (reason) => ({ ok: false, reason });

/** The photo at `url` as {ok: true, data: "data:image/...;base64,..."}, or {ok: false, reason} (no URL in it). */
export async function fetchPhoto(fetchFn, cfg, url, max = MAX_PHOTO_BYTES, timeoutMs = PHOTO_TIMEOUT_MS) {
  const id = photoId(cfg.server, url);
  if (id === null) return refuse("not a photo of the configured InboxLens server");
  let response;
  try {
    response = await fetchFn(apiUrl(cfg.server, `/photos/${id}`), {
      headers: { Authorization: `Bearer ${cfg.token}`, Accept: PHOTO_TYPES.join(", ") },
      credentials: "omit", redirect: "error", signal: AbortSignal.timeout(timeoutMs),
    });
  } catch {
    return refuse("the server did not answer");
  }
  const type = photoType(response.headers.get("Content-Type"));
  const declared = Number(response.headers.get("Content-Length") ?? "0");
  const drop = async (reason) => {
    await response.body?.cancel().catch(() => {});
    return refuse(reason);
  };
  if (response.status !== 200) return drop(`the server answered ${response.status}`);
  if (type === null) return drop("not a JPEG, PNG or GIF image");
  if (declared > max) return drop("the photo is too large");
  let bytes;
  try {
    bytes = await readBounded(response, max);
  } catch {
    return refuse("the server did not answer");
  }
  if (bytes === null) return refuse("the photo is too large");
  if (!startsAs(bytes, type)) return refuse("not a JPEG, PNG or GIF image");
  return { ok: true, data: dataUrl(type, bytes) };
}
