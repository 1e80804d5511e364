// Small helpers shared by the demo pages.

/**
 * `ws(s)://<this host><path>`: pages talk to the server they were loaded from.
 * @param {string} path
 */
export function wsUrl(path) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}${path}`;
}

/**
 * Create an element: `el("li", { className: "in" }, "text", child)`.
 * @param {string} tag
 * @param {Record<string, any>} [props]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role") node.setAttribute(key, String(value));
    else /** @type {any} */ (node)[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

/** @param {string} id */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing`);
  return node;
}

/** "14:03:27" */
export function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

/**
 * Append a line to a `.log` list and keep it scrolled to the bottom.
 * @param {HTMLElement} list
 * @param {"in" | "out" | "sys"} kind
 * @param {string} text
 * @param {string} [tag]
 */
export function logLine(list, kind, text, tag) {
  list.querySelector(".empty")?.remove();
  const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
  const item = el(
    "li",
    { className: kind },
    el("span", { className: "time" }, clock()),
    tag ? el("span", { className: "tag" }, tag) : null,
    el("span", { className: "text" }, text),
  );
  list.append(item);
  while (list.children.length > 500) list.firstElementChild?.remove();
  if (stick) list.scrollTop = list.scrollHeight;
  return item;
}

/**
 * Show a state on a `.badge`.
 * @param {HTMLElement} badge
 * @param {string} state
 * @param {string} [label]
 */
export function setBadge(badge, state, label) {
  badge.dataset.state = state;
  badge.textContent = label ?? state;
}

/** Initials for an avatar: "Ada Lovelace" -> "AL". */
export function initials(name = "") {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return "?";
  return (parts[0][0] + (parts.length > 1 ? parts[parts.length - 1][0] : "")).toUpperCase();
}

/** A stable colour for a name or id. */
export function colorFor(key = "") {
  let hash = 0;
  for (const ch of key) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  const hues = [230, 262, 199, 164, 330, 20, 290, 140];
  return `hsl(${hues[hash % hues.length]} 62% 48%)`;
}
