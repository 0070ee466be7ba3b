// The card's `profile` block (docs/api.md, "The card's profile block"): who a correspondent is,
// each field with its source. Pure functions over plain data, so `node --test` covers them:
// the block checked field by field (an older server sends none, a newer or broken one may
// send odd types: whatever does not fit is left out, and the card shows as before), links
// that may become <a> (http and https only: the values come from other people's vCards), and
// the rows the side panel shows.

export const MAX_TEXT = 1000; // characters of a name, organisation or title
export const MAX_LINK = 2048; // characters of a link's value
export const MAX_LABEL = 200; // characters of a link's or a source's label
export const MAX_LINKS = 32;
export const SOURCE_KINDS = Object.freeze(["carddav", "google", "vcf", "gravatar", "libravatar"]);
export const LINK_KINDS = Object.freeze(["url", "social", "impp"]);
export const FIELDS = Object.freeze([["name", "Name"], ["organization", "Organisation"], ["title", "Title"]]);
// The photo URL the server gives: InboxLens's own, with an opaque id (no address in it).
export const PHOTO_PATH = /^\/api\/v1\/photos\/([A-Za-z0-9_-]{1,1200})$/;
const KIND_WORDS = { carddav: "CardDAV", google: "Google Contacts", vcf: ".vcf import" };
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$/;

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const text = (v, max) => (typeof v === "string" && v.trim().length > 0 && v.length <= max ? v : null);

function source(raw) {
  if (!isObject(raw) || !SOURCE_KINDS.includes(raw.kind)) return null;
  const label = text(raw.label, MAX_LABEL);
  return label === null ? null : { kind: raw.kind, label };
}

function refreshed(raw) {
  return typeof raw === "string" && raw.length <= 40 && ISO.test(raw) && Number.isFinite(Date.parse(raw)) ? raw : null;
}

function field(raw, key, max) {
  if (!isObject(raw)) return null;
  const value = text(raw[key], max);
  const src = source(raw.source);
  return value === null || src === null ? null : { [key]: value, source: src, refreshed_at: refreshed(raw.refreshed_at) };
}

function photo(raw) {
  const found = field(raw, "url", MAX_LINK);
  return found && (PHOTO_PATH.test(found.url) || /^https?:\/\//i.test(found.url)) ? found : null;
}

function link(raw) {
  const found = field(raw, "value", MAX_LINK);
  if (!found || !LINK_KINDS.includes(raw.kind)) return null;
  const label = typeof raw.label === "string" && raw.label.length <= MAX_LABEL ? raw.label : "";
  return { kind: raw.kind, value: found.value, label, source: found.source, refreshed_at: found.refreshed_at };
}

/** The profile block as the server sent it, checked: null when absent or not an object; otherwise every
 *  field that fits the contract (a field that does not is left out, alone). Never throws. */
export function profileBlock(raw) {
  if (!isObject(raw)) return null;
  const block = { name: null, organization: null, title: null, photo: photo(raw.photo), links: [] };
  for (const [key] of FIELDS) block[key] = field(raw[key], "value", MAX_TEXT);
  if (Array.isArray(raw.links)) block.links = raw.links.slice(0, MAX_LINKS).map(link).filter(Boolean);
  const empty = !block.name && !block.organization && !block.title && !block.photo && block.links.length === 0;
  return empty ? null : block;
}

/** Where a link may point, or null to show it as text: http(s) only, with a host, without user:password@
 *  (which would make "https://bank.test@evil.test" read as the bank). */
export function linkHref(value) {
  if (typeof value !== "string" || value.length > MAX_LINK || /[\s\x00-\x1f\x7f]/.test(value)) return null;
  let url;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  if ((url.protocol !== "https:" && url.protocol !== "http:") || !url.hostname) return null;
  if (url.username || url.password) return null;
  return url.href;
}

/** "from Work (CardDAV)", "from Gravatar": where a field came from, in words. */
export function sourceNote(src) {
  const kind = KIND_WORDS[src.kind];
  return kind && kind !== src.label ? `from ${src.label} (${kind})` : `from ${src.label}`;
}

/** "2026-03-01": the day a source was last refreshed, or "" when the server did not say. */
export function refreshedDay(iso) {
  return iso ? new Date(Date.parse(iso)).toISOString().slice(0, 10) : "";
}

/** What the panel shows, in order: the text rows (name, organisation, title), the photo, the links. */
export function profileView(block) {
  if (!block) return null;
  const note = (f) => ({ note: sourceNote(f.source), day: refreshedDay(f.refreshed_at) });
  return {
    rows: FIELDS.filter(([key]) => block[key]).map(([key, label]) => ({ key, label, text: block[key].value,
                                                                         ...note(block[key]) })),
    photo: block.photo ? { url: block.photo.url, ...note(block.photo) } : null,
    links: block.links.map((l) => ({ kind: l.kind, label: l.label, text: l.value, href: linkHref(l.value), ...note(l) })),
  };
}
