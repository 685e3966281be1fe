// Small DOM helpers: elements built with textContent only (never innerHTML), so message bodies
// and names always render as text.

/**
 * @param {string} tag
 * @param {Record<string, any>} [attrs] `class`, `text`, `on<event>`, data-* and other attributes
 * @param {...(Node|string|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key === "class") el.className = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child);
  }
  return el;
}

/** Change text only when it differs, so observers see real changes only.
 * @param {Element} el @param {string} text */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** Set (or with null remove) an attribute only when it differs.
 * @param {Element} el @param {string} name @param {string|number|null|undefined} value */
export function setAttr(el, name, value) {
  if (value === null || value === undefined) {
    if (el.hasAttribute(name)) el.removeAttribute(name);
  } else if (el.getAttribute(name) !== String(value)) {
    el.setAttribute(name, String(value));
  }
}

/** @param {string} selector @param {ParentNode} [root] @returns {HTMLElement} */
export function $(selector, root = document) {
  return /** @type {HTMLElement} */ (root.querySelector(selector));
}

/** "14:05": the time of day of a timestamp. @param {string} iso */
export function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** The day of a timestamp, in the reader's time zone: "2026-11-29". @param {string} iso */
export function dayKey(iso) {
  const d = new Date(iso);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

/** "Today", "Yesterday" or the date, for a day separator. @param {string} iso */
export function dayLabel(iso) {
  const key = dayKey(iso);
  if (key === dayKey(new Date().toISOString())) return "Today";
  const yesterday = new Date(Date.now() - 86400000).toISOString();
  if (key === dayKey(yesterday)) return "Yesterday";
  return new Date(iso).toLocaleDateString([], { weekday: "short", year: "numeric", month: "short", day: "numeric" });
}

/** "last seen 5 min ago" style text for an offline user. @param {string|null} iso */
export function lastSeen(iso) {
  if (!iso) return "offline";
  const minutes = Math.round((Date.now() - new Date(iso).getTime()) / 60000);
  if (minutes < 1) return "last seen just now";
  if (minutes < 60) return `last seen ${minutes} min ago`;
  if (minutes < 1440) return `last seen ${Math.round(minutes / 60)} h ago`;
  return `last seen ${new Date(iso).toLocaleDateString()}`;
}
