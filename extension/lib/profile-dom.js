// The side panel's profile section, built from lib/profile.js's view as DOM nodes with text only
// (textContent, setAttribute; never markup). A link is an <a> only when lib/profile.js allowed
// its URL (http or https), opened in a new tab without opener or referrer; its text is the URL
// itself, so a label cannot pass one site off as another. The photo is shown only from a data:
// URL the service worker made (lib/photo.js isPhotoData): the panel fetches nothing itself.

import { el, list } from "./dom.js";
import { isPhotoData } from "./photo.js";
import { profileView } from "./profile.js";

const LINK_WORDS = { url: "Web", social: "Social", impp: "Chat" };

function note(item) {
  return el("small", item.day ? `${item.note}, ${item.day}` : item.note, { class: "source" });
}

function linkItem(item) {
  const label = item.label.trim() || LINK_WORDS[item.kind];
  const target = item.href === null ? el("span", item.text, { class: "value" })
    : el("a", item.text, { href: item.href, target: "_blank", rel: "noopener noreferrer", class: "value" });
  const li = list("li", [el("span", `${label}: `), target, " ", note(item)]);
  li.setAttribute("data-link", item.kind);
  return li;
}

/** The section for a checked profile block (lib/profile.js profileBlock), or null for none. Its photo slot
 *  stays hidden until `showPhoto` fills it. */
export function profileSection(block) {
  const view = profileView(block);
  if (!view) return null;
  const section = el("section", null, { id: "profile", "data-section": "profile" });
  const slot = el("figure", null, { id: "profile-photo", hidden: "" });
  section.append(slot);
  if (view.rows.length) {
    const dl = document.createElement("dl");
    for (const row of view.rows) {
      const dd = list("dd", [el("span", row.text, { class: "value" }), " ", note(row)]);
      dd.setAttribute("data-field", row.key);
      dl.append(el("dt", row.label), dd);
    }
    section.append(dl);
  }
  if (view.links.length) {
    const ul = list("ul", view.links.map(linkItem));
    ul.setAttribute("id", "profile-links");
    section.append(ul);
  }
  return { section, slot, photo: view.photo, alt: block.name ? `Photo of ${block.name.value}` : "Photo" };
}

/** The photo in its slot, if `data` is a data: URL of ours; otherwise the slot stays hidden. */
export function showPhoto(profile, data) {
  if (!profile?.photo || !isPhotoData(data)) return false;
  const img = el("img", null, { src: data, alt: profile.alt, width: "72", height: "72" });
  profile.slot.replaceChildren(img, list("figcaption", [note(profile.photo)]));
  profile.slot.removeAttribute("hidden");
  return true;
}
