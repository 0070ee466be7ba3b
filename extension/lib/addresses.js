// E-mail addresses as the mail pages show them: normalised, checked, deduplicated.

const ADDRESS = /^[^\s@<>()",;:\\\x00-\x1f\x7f]{1,64}@[^\s@<>()",;:\\\x00-\x1f\x7f]{1,255}$/;
const IN_BRACKETS = /<([^<>\s]+@[^<>\s]+)>/;
const BARE = /([^\s<>()",;:]+@[^\s<>()",;:]+\.[^\s<>()",;:]+)/;

export function isAddress(value) {
  return typeof value === "string" && value.length <= 320 && ADDRESS.test(value) && !value.includes("..");
}

export function normalize(value) {
  const text = String(value ?? "").trim().toLowerCase();
  return isAddress(text) ? text : null;
}

/** The address in text like "Bob <bob@x.test>", "bob@x.test" or a title attribute; null if none. */
export function fromText(text) {
  const value = String(text ?? "");
  const match = IN_BRACKETS.exec(value) ?? BARE.exec(value);
  return match ? normalize(match[1]) : null;
}

/** Distinct addresses in first-seen order, leaving out the mailbox's own. */
export function distinct(addresses, own = null) {
  const seen = new Set();
  const mine = own ? own.toLowerCase() : null;
  for (const a of addresses) {
    const n = normalize(a);
    if (n && n !== mine) seen.add(n);
  }
  return [...seen];
}
