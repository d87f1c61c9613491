/* DOM helpers for rendering in place.
 *
 * Live frames arrive many times a second. Writing only what changed, and never
 * moving or replacing a node that is already where it belongs, is what keeps
 * focus, a text selection, a caret and a scroll position where the person left
 * them. Text from printers and other clients only ever goes in as text.
 */

export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = String(text);
  return node;
}

export function fromTemplate(id) {
  return $(id).content.firstElementChild.cloneNode(true);
}

export function safeId(text) {
  return String(text).replace(/[^A-Za-z0-9_-]/g, "_");
}

/** Set a node's text if it differs; a lone text node is edited, not replaced. */
export function setText(node, text) {
  const value = text == null ? "" : String(text);
  if (node.textContent === value) return;
  const only = node.firstChild;
  if (only && only === node.lastChild && only.nodeType === Node.TEXT_NODE && value) {
    only.data = value;
  } else {
    node.textContent = value;
  }
}

export function setHidden(node, hidden) {
  if (node.hidden !== Boolean(hidden)) node.hidden = Boolean(hidden);
}

/** Set (or with null, remove) an attribute if it differs. */
export function setAttr(node, name, value) {
  if (value == null) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, String(value));
  }
}

export function setData(node, key, value) {
  const text = value == null ? "" : String(value);
  if (node.dataset[key] !== text) node.dataset[key] = text;
}

export function setBar(barNode, percent) {
  const inner = barNode.firstElementChild;
  const v = percent == null || !isFinite(percent) ? 0 : Math.max(0, Math.min(100, percent));
  const width = `${v}%`;
  if (inner.style.width !== width) inner.style.width = width;
  barNode.classList.toggle("high", v >= 90);
}

export function bar(percent) {
  const outer = el("span", "bar");
  outer.setAttribute("aria-hidden", "true");
  outer.append(el("span"));
  setBar(outer, percent);
  return outer;
}

/**
 * Put `nodes` into `container` in this order, moving only nodes that are out of
 * place (a node that is already right is never touched, so it keeps its focus).
 */
export function placeInOrder(container, nodes) {
  nodes.forEach((node, index) => {
    const here = container.children[index];
    if (here !== node) container.insertBefore(node, here || null);
  });
}

/**
 * Keyed list rendering: one node per key, created once, updated in place after.
 * `create(item)` makes a node, `update(node, item)` fills it in. Nodes whose key
 * is gone are removed; the rest stay where they are unless the order changed.
 */
export class KeyedList {
  constructor(container, { key, create, update }) {
    this.container = container;
    this.key = key;
    this.create = create;
    this.update = update;
    this.nodes = new Map();
  }

  render(items) {
    const wanted = new Map();
    for (const item of items) {
      const k = this.key(item);
      if (wanted.has(k)) continue;
      let node = this.nodes.get(k);
      if (!node) node = this.create(item);
      this.update(node, item);
      wanted.set(k, node);
    }
    for (const [k, node] of this.nodes) {
      if (!wanted.has(k)) node.remove();
    }
    this.nodes = wanted;
    placeInOrder(this.container, [...wanted.values()]);
    // Anything else in the container (a placeholder) goes.
    while (this.container.children.length > wanted.size) this.container.lastElementChild.remove();
  }

  get(key) {
    return this.nodes.get(key);
  }

  get size() {
    return this.nodes.size;
  }
}
