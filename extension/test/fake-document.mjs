// The few DOM calls lib/dom.js and lib/profile-dom.js make (createElement, setAttribute, textContent,
// append, replaceChildren), so node tests can build the side panel's sections and read them back.
// Markup is never parsed: there is no innerHTML here, so a test that passes cannot have used it.

class FakeNode {}

class FakeText extends FakeNode {
  constructor(text) {
    super();
    this.data = String(text);
  }

  get textContent() {
    return this.data;
  }
}

export class FakeElement extends FakeNode {
  constructor(tagName) {
    super();
    this.tagName = tagName.toUpperCase();
    this.attributes = new Map();
    this.childNodes = [];
  }

  setAttribute(name, value) {
    this.attributes.set(name, String(value));
  }

  getAttribute(name) {
    return this.attributes.has(name) ? this.attributes.get(name) : null;
  }

  removeAttribute(name) {
    this.attributes.delete(name);
  }

  hasAttribute(name) {
    return this.attributes.has(name);
  }

  append(...nodes) {
    for (const n of nodes) this.childNodes.push(n instanceof FakeNode ? n : new FakeText(n));
  }

  replaceChildren(...nodes) {
    this.childNodes = [];
    this.append(...nodes);
  }

  get children() {
    return this.childNodes.filter((n) => n instanceof FakeElement);
  }

  get lastChild() {
    return this.childNodes.at(-1) ?? null;
  }

  get textContent() {
    return this.childNodes.map((n) => n.textContent).join("");
  }

  set textContent(text) {
    this.childNodes = [new FakeText(text)];
  }

  /** Every element below, depth first, that `test` accepts. */
  findAll(test) {
    return this.children.flatMap((c) => [...(test(c) ? [c] : []), ...c.findAll(test)]);
  }

  find(test) {
    return this.findAll(test)[0] ?? null;
  }
}

export function install() {
  globalThis.Node = FakeNode;
  globalThis.document = { createElement: (tag) => new FakeElement(tag) };
}
