// Building DOM nodes with text only: every value from the API goes through textContent.

export function el(tag, text = null, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

export function list(tag, items) {
  const node = document.createElement(tag);
  node.append(...items);
  return node;
}

/** A definition list from [term, value] pairs; a value may be a node. */
export function pairs(entries) {
  const dl = document.createElement("dl");
  for (const [term, value] of entries) {
    const dd = document.createElement("dd");
    if (value instanceof Node) dd.append(value);
    else dd.textContent = String(value);
    dl.append(el("dt", term), dd);
  }
  return dl;
}
