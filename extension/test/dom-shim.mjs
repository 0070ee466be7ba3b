// A minimal DOM for node tests of the selector modules: parses well-formed fixture HTML and
// answers querySelector(All) for compound selectors ([attr], [attr=v], ^=, *=, .class, #id, tag)
// joined by descendant or child combinators, in comma lists. <template> and <script> contents
// are left out, as a browser leaves them out of the document tree.

const VOID = new Set(["meta", "link", "br", "input", "img", "hr"]);
const ENTITIES = { lt: "<", gt: ">", amp: "&", quot: '"', "#39": "'", apos: "'" };
const decode = (s) => s.replace(/&(lt|gt|amp|quot|#39|apos);/g, (_, e) => ENTITIES[e]);

class Node {
  constructor(parent) {
    this.parentNode = parent;
  }
}

class Text extends Node {
  constructor(parent, text) {
    super(parent);
    this.text = text;
  }

  get textContent() {
    return this.text;
  }
}

export class Element extends Node {
  constructor(parent, tagName, attrs) {
    super(parent);
    this.tagName = tagName;
    this.attrs = attrs;
    this.childNodes = [];
  }

  get children() {
    return this.childNodes.filter((n) => n instanceof Element);
  }

  get textContent() {
    return this.childNodes.map((n) => n.textContent).join("");
  }

  getAttribute(name) {
    return name in this.attrs ? this.attrs[name] : null;
  }

  *descendants() {
    for (const child of this.children) {
      yield child;
      yield* child.descendants();
    }
  }

  querySelectorAll(selector) {
    const groups = parseSelector(selector);
    return [...this.descendants()].filter((el) => groups.some((g) => matches(el, g, this)));
  }

  querySelector(selector) {
    return this.querySelectorAll(selector)[0] ?? null;
  }
}

export function parse(html) {
  const doc = new Element(null, "#document", {});
  let current = doc;
  const cleaned = html.replace(/<(template|script|style)\b[\s\S]*?<\/\1>/gi, "").replace(/<!--[\s\S]*?-->/g, "")
    .replace(/<!doctype[^>]*>/i, "");
  const token = /<\/([a-z0-9-]+)\s*>|<([a-z0-9-]+)((?:\s+[^\s=>\/]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?)*)\s*\/?>|([^<]+)/gi;
  for (const m of cleaned.matchAll(token)) {
    if (m[1]) {
      while (current !== doc && current.tagName !== m[1].toLowerCase()) current = current.parentNode;
      if (current !== doc) current = current.parentNode;
    } else if (m[2]) {
      const attrs = {};
      for (const a of m[3].matchAll(/([^\s=>\/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g)) {
        attrs[a[1].toLowerCase()] = decode(a[2] ?? a[3] ?? a[4] ?? "");
      }
      const el = new Element(current, m[2].toLowerCase(), attrs);
      current.childNodes.push(el);
      if (!VOID.has(el.tagName) && !m[0].endsWith("/>")) current = el;
    } else if (m[4]) {
      current.childNodes.push(new Text(current, decode(m[4])));
    }
  }
  return doc;
}

function parseSelector(selector) {
  return selector.split(",").map((group) => {
    const steps = [];
    let combinator = " ";
    for (const part of group.trim().replace(/\s*>\s*/g, " > ").split(/\s+(?=(?:[^"]*"[^"]*")*[^"]*$)/)) {
      if (part === ">") {
        combinator = ">";
        continue;
      }
      steps.push({ combinator, test: compound(part) });
      combinator = " ";
    }
    return steps;
  });
}

function compound(text) {
  const tests = [];
  const re = /^([a-z0-9-]+|\*)|\.([\w-]+)|#([\w-]+)|\[([\w-]+)(?:([\^*]?=)(?:"([^"]*)"|([^\]]*)))?\]/gi;
  for (const m of text.matchAll(re)) {
    if (m[1] && m[1] !== "*") tests.push((el) => el.tagName === m[1].toLowerCase());
    else if (m[2]) tests.push((el) => (el.getAttribute("class") ?? "").split(/\s+/).includes(m[2]));
    else if (m[3]) tests.push((el) => el.getAttribute("id") === m[3]);
    else if (m[4]) {
      const value = m[6] ?? m[7];
      const name = m[4].toLowerCase();
      tests.push((el) => {
        const v = el.getAttribute(name);
        if (v === null) return false;
        if (!m[5]) return true;
        if (m[5] === "=") return v === value;
        return m[5] === "^=" ? v.startsWith(value) : v.includes(value);
      });
    }
  }
  return (el) => tests.every((t) => t(el));
}

function matches(el, steps, scope) {
  const last = steps.length - 1;
  if (!steps[last].test(el)) return false;
  return ancestorsMatch(el, steps, last, scope);
}

function ancestorsMatch(el, steps, index, scope) {
  if (index === 0) return true;
  const { combinator } = steps[index];
  let parent = el.parentNode;
  while (parent && parent !== scope.parentNode && parent.tagName !== "#document") {
    if (steps[index - 1].test(parent) && ancestorsMatch(parent, steps, index - 1, scope)) return true;
    if (combinator === ">") return false;
    parent = parent.parentNode;
  }
  return false;
}
